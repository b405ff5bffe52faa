"""Telling people: notifications (outbox, sender, e-mail, webhooks) and the in-place guard."""
