from autointerp.cli import main

main()
