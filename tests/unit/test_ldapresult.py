"""What a DC answered: failed results name what was asked and the DC; first values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from credroam.errors import DirectoryError
from credroam.ldapresult import check_result, first


def test_first_is_case_insensitive_and_tolerates_scalars():
    attrs = {"DnsHostName": ["dc1.lab.example"], "serverName": "CN=DC1", "empty": []}
    assert first(attrs, "dnshostname") == "dc1.lab.example"
    assert first(attrs, "SERVERNAME") == "CN=DC1"
    assert first(attrs, "empty", "none") == "none"
    assert first(attrs, "missing") is None


def fake_conn(code: int, description: str = "", message: str = "") -> SimpleNamespace:
    result = {"result": code, "description": description, "message": message}
    return SimpleNamespace(result=result, server=SimpleNamespace(host="dc1.lab.example"))


def test_check_result_names_what_failed_and_the_dc():
    conn = fake_conn(50, "insufficientAccessRights", "00002098: no write access")
    with pytest.raises(DirectoryError) as err:
        check_result(conn, "modifying CN=x")
    assert str(err.value) == (
        "modifying CN=x failed on dc1.lab.example: insufficientAccessRights (50) "
        "00002098: no write access"
    )
    assert check_result(fake_conn(0), "anything") is True


def test_a_missing_object_is_an_answer_only_when_the_caller_says_so():
    assert check_result(fake_conn(32, "noSuchObject"), "reading CN=x", missing_ok=True) is False
    with pytest.raises(DirectoryError, match=r"reading CN=x failed on .*noSuchObject \(32\)"):
        check_result(fake_conn(32, "noSuchObject"), "reading CN=x")
