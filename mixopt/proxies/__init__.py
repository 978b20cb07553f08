"""Proxy language models (dense and MoE), the loop that trains K of them at once, and external trainers."""

from mixopt.proxies.entry import train_proxies, train_proxy
from mixopt.proxies.model import ModelSize, ProxyLM, model_size
from mixopt.proxies.train import ProxyResult

__all__ = ["ModelSize", "ProxyLM", "ProxyResult", "model_size", "train_proxies", "train_proxy"]
