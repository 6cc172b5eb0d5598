"""Local fake cloud services: each speaks its provider's HTTP API on 127.0.0.1, runs the work
on the matching local simulator, and can inject faults. Tests drive the real SDKs against
them; users rehearse campaigns with them (`python -m qrun.fakes <provider>`)."""
