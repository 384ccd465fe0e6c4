"""Storefront endpoints, one module per part of the shop; `routes` lists them all."""
