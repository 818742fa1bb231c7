"""Schedules: cron expressions, the schedule table's operations, and the scheduler process that fires them.

`cron` parses and steps cron expressions in a time zone; `schedules` creates, lists, pauses and fires
schedules (each firing submits a job through `jobrunner.jobs`); `scheduler` is `jobrunner scheduler`.
"""
