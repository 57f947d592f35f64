"""A fleet of real edge nodes, each in its own network namespace, under scripted network faults."""

from edgefleet.faults import LinkFaults, kernel_offers
from edgefleet.namespaces import Network
from edgefleet.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["LinkFaults", "Network", "Scenario", "ScenarioError", "kernel_offers", "load_scenario"]
