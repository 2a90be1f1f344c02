"""Everything after issuance, one module per capability (each with its own ``__all__``):

* :mod:`.renew` - states ("what is due"), renewal, deploy hooks;
* :mod:`.rekey` - DANE-safe key rollover (stage, publish, commit, abort);
* :mod:`.intermediate` - re-certifying the intermediate CA;
* :mod:`.revoke`, :mod:`.crl` - revocation, the revocation journal and the CRL;
* :mod:`.doctor` - store consistency checks and repair;
* :mod:`.schedule` - systemd timer / cron line for unattended renewal.

Nothing is imported here, so importing one capability does not load the others."""

__all__ = ["renew", "rekey", "intermediate", "revoke", "crl", "doctor", "schedule"]
