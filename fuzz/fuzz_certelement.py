"""Fuzz the certificate store element inside certificate and request tokens (type 3/4/7/8).

Valid outcome: an element whose serialization is the input again, whose friendly name and
archived flag read, whose archived flag can be set and cleared, and whose expiry is a FILETIME
(the sync files every certificate item with it); or CertElementError.
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from credroam.roaming.certelement import (
        CERT_ARCHIVED_PROP_ID,
        CertElement,
        CertElementError,
        parse_cert_element,
        serialize_cert_element,
    )
    from credroam.timestamps import to_filetime


def one_input(data: bytes) -> None:
    try:
        element = parse_cert_element(data)
    except CertElementError:
        return
    assert serialize_cert_element(element) == data, "parse/serialize is not a round trip"
    element.friendly_name  # noqa: B018 -- checked when parsed: must not raise now
    to_filetime(element.not_valid_after)
    for archived in (True, False):  # the flag set or cleared, every other record kept
        properties = {k: v for k, v in element.properties.items() if k != CERT_ARCHIVED_PROP_ID}
        if archived:
            properties[CERT_ARCHIVED_PROP_ID] = b""
        changed = serialize_cert_element(CertElement(der=element.der, properties=properties))
        assert parse_cert_element(changed).archived is archived


def seeds() -> list[bytes]:
    import samples

    return samples.cert_elements()


if __name__ == "__main__":
    harness.fuzz(one_input, seeds, dictionary=[b"\x20\x00\x00\x00\x01\x00\x00\x00"])
