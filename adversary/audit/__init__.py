"""The privacy audit: how exposed is a model's input at a split point (or through its FedSGD gradients),
measured before attacking, from the feature (gradient) map's geometry and a short attack.

One small module per measure: `distance` (input vs feature distance over pairs of controlled similarity),
`invertibility` (randomised Jacobian spectrum), `short_attack` (a small budget of the cheapest attack),
`score` (one number from the parts), `report` (audit.json, audit.csv, audit.png); `run` ties them together
(`adversary.audit.run`: AuditConfig, audit_one, run_audit).
"""
