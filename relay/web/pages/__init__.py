"""The server-rendered pages: the customers' home and the operators' console."""

from __future__ import annotations

from fastapi import APIRouter

from relay.web.pages import console, customer, login

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (login.router, customer.router, console.router)
