"""Proxy language models and the loop that trains one on a mixture."""

from mixopt.proxies.model import ProxyLM
from mixopt.proxies.train import ProxyResult, train_proxy

__all__ = ["ProxyLM", "ProxyResult", "train_proxy"]
