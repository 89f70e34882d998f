"""The WhatsApp Business Cloud API client: notify sends lifecycle messages with it, intake answers
applicants' conversations. Signature checks for its webhooks are in ``shared.webhook_signing``."""
