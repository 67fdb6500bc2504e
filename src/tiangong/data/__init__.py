"""The data system: indicators that flow from enterprises to sub-centers to the national center.

``model`` holds the catalog and report types (sans-I/O); ``catalog`` the standard indicators and
dimension codes; ``governance`` grading, export policy and the audit log; ``aggregate`` the
rules that combine reports; ``store`` the analytics store; ``transport`` NATS JetStream and the
embedded outbox; ``center`` a sub-center or the national center; ``enterprise`` the platform's
side: computing and exporting reports.
"""
