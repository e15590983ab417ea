"""Workflows: a rule's steps run for each recipient, one step after another.

``engine`` decides (pure: steps, engagement and time in, decisions out);
``runner`` is its database edge (claim due runs, decide, write deliveries and
the run's history); ``timeline`` simulates a run for the admin preview;
``control`` cancels runs. Runs are created by fan-out (``notify.fanout.runs``).
"""
