from plc.cli import main

main()
