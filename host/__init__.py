"""The parties: trusted centre, personalisation, CLI (and, later, the transaction)."""
