"""SMPLify model fitting (pending: see the SMPLify issue)."""
