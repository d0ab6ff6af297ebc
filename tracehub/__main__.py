from tracehub.cli import main

main()
