from partner_gateway.cli import main

main()
