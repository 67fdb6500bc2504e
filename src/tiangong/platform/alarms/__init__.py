"""Rules and alarms: threshold and rate-of-change rules, alarm lifecycle and de-duplication."""

from tiangong.platform.alarms.lifecycle import AlarmState
from tiangong.platform.alarms.rules import RateOfChangeRule, Rule, RuleScope, ThresholdRule
from tiangong.platform.alarms.service import Alarm, AlarmService, StoredRule

__all__ = [
    "Alarm",
    "AlarmService",
    "AlarmState",
    "RateOfChangeRule",
    "Rule",
    "RuleScope",
    "StoredRule",
    "ThresholdRule",
]
