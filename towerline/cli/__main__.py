from towerline.cli.app import main

main()
