"""The audit: diagnose -> explain -> fix -> report (``Audit(...).find_issues().report(out)``)."""
from spurlab.audit.core import Audit, run_audit
from spurlab.audit.findings import AuditFindings, AuditReport

__all__ = ["Audit", "AuditFindings", "AuditReport", "run_audit"]
