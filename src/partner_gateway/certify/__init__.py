"""`partner-gateway certify`: play BetLink's backend and the casino gateway against a deployment.

A black box over HTTP only: nothing here imports the service's endpoints, store or database, so
it judges any deployment of the contract, this one included.
"""
