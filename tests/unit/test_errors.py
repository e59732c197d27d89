"""One root for the core's errors: a caller tells "credroam refused, and says why" from a bug."""

from __future__ import annotations

import pytest

from credroam.errors import CredroamError, DirectoryError
from credroam.gpo.model import GpoError
from credroam.gpo.preg import PolFormatError, PolValueError
from credroam.gpo.secdesc import SecurityDescriptorError
from credroam.gpo.sysvol import SysvolError
from credroam.roaming.certelement import CertElementError
from credroam.roaming.directory import ConcurrentModification
from credroam.roaming.envelope import EnvelopeError, WrongPassword
from credroam.roaming.fsutil import LockHeld, UnsafePath
from credroam.roaming.model import ReconcileError
from credroam.roaming.roamingkey import RoamingKeyError
from credroam.roaming.state import StateError
from credroam.roaming.store import StoreError
from credroam.roaming.sync import SyncBusy, SyncError
from credroam.schema.definitions import SchemaDefinitionError
from credroam.schema.plan import SchemaConflict
from credroam.timestamps import TimestampError
from credroam.tokens import TokenError

BAD_INPUT = [
    TokenError,
    CertElementError,
    TimestampError,
    GpoError,
    PolFormatError,
    PolValueError,
    SecurityDescriptorError,
    EnvelopeError,
    WrongPassword,
    ReconcileError,
    StateError,
    SchemaDefinitionError,
]
OTHER = [
    DirectoryError,
    ConcurrentModification,
    SysvolError,
    StoreError,
    SyncError,
    SyncBusy,
    RoamingKeyError,
    SchemaConflict,
    LockHeld,
    UnsafePath,
]


@pytest.mark.parametrize("error", BAD_INPUT + OTHER, ids=lambda error: error.__name__)
def test_every_core_error_is_a_credroam_error(error):
    assert issubclass(error, CredroamError)


@pytest.mark.parametrize("error", BAD_INPUT, ids=lambda error: error.__name__)
def test_errors_about_bad_input_stay_value_errors(error):
    assert issubclass(error, ValueError)


@pytest.mark.parametrize("error", [LockHeld, SyncBusy], ids=lambda error: error.__name__)
def test_a_held_lock_is_not_a_directory_error(error):
    # A caller retrying on DirectoryError (a DC went away) must not spin on a busy local store.
    assert not issubclass(error, DirectoryError)
