"""Everything after issuance: renew, rekey, intermediate renewal, revoke, CRL, doctor,
schedule."""
