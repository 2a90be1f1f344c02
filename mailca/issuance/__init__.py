"""Creating the CA and issuing certificates: init, issue, sign (CSR), batch."""
