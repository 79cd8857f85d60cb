from clicktrail.cli import main

main()
