"""The legacy customer service: a SOAP 1.1 service (spyne) with a WSDL, as an ERP would expose it.

    python examples/legacy_mainframe/soap_service.py --port 8735
    curl http://127.0.0.1:8735/?wsdl

``GetCustomer`` answers a customer record; an unknown id is a ``Client.CustomerNotFound`` fault and an
id that is not of the form ``C123`` a ``Client.InvalidCustomerId`` fault.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from decimal import Decimal
from wsgiref.simple_server import WSGIRequestHandler, make_server

from spyne import Application, ComplexModel, Fault, Integer, ServiceBase, Unicode, rpc
from spyne import Decimal as SoapDecimal
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

NAMESPACE = "urn:acme:legacy:customers"

CUSTOMERS = {
    "C102": ("Ada Byron", "gold", Decimal("5000.00"), 12),
    "C103": ("Grace Hopper", "silver", Decimal("2500.00"), 7),
    "C104": ("Alan Turing", "bronze", Decimal("1000.00"), 3),
    "C105": ("Edsger Dijkstra", "gold", Decimal("7500.00"), 21),
}


class Customer(ComplexModel):
    __namespace__ = NAMESPACE
    customer_id = Unicode
    name = Unicode
    tier = Unicode
    credit_limit_usd = SoapDecimal
    open_orders = Integer


class CustomerService(ServiceBase):
    @rpc(Unicode(min_occurs=1, nillable=False), _returns=Customer)
    def GetCustomer(ctx, customer_id: str) -> Customer:
        if not re.fullmatch(r"C\d{3}", customer_id or ""):
            raise Fault(
                faultcode="Client.InvalidCustomerId", faultstring=f"{customer_id!r} is not a customer id"
            )
        found = CUSTOMERS.get(customer_id)
        if found is None:
            raise Fault(faultcode="Client.CustomerNotFound", faultstring=f"no customer {customer_id}")
        name, tier, limit, open_orders = found
        return Customer(
            customer_id=customer_id, name=name, tier=tier, credit_limit_usd=limit, open_orders=open_orders
        )


def build_app() -> WsgiApplication:
    app = Application(
        [CustomerService], tns=NAMESPACE, in_protocol=Soap11(validator="lxml"), out_protocol=Soap11()
    )
    return WsgiApplication(app)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The legacy customer SOAP service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8735)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    server = make_server(args.host, args.port, build_app(), handler_class=_QuietHandler)
    sys.stdout.write(f"ready http://{args.host}:{server.server_port}/?wsdl\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
