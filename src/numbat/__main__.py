from numbat.cli import main

main()
