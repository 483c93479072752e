from imedge.cli.main import main

main()
