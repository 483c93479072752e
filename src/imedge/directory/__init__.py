"""FEDERATION.md §Words (peer server, directory): the corporate directory.

People are fetched from each peer server's LDAP, mapped to entries (`mapping`), compared
with the stored directory by a pure `plan_sync` (`plan`), and the plan is applied through
the store's `DirectoryStore` port in one transaction.
"""
