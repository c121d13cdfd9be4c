"""The audit: diagnose -> explain -> fix -> report (``Audit(...).find_issues().report(out)``)."""
from spurlab.audit.core import Audit, AuditReport, run_audit

__all__ = ["Audit", "AuditReport", "run_audit"]
