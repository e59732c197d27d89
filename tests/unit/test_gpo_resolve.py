"""Which GPOs apply to a user and what policy they make (credroam.gpo.resolve), as Windows finds
it: link order, site/domain/OU order, enforced links, blocked inheritance, security filtering by
the Apply Group Policy right (deny wins), disabled user configuration, and the Registry.pol merge
with the source of every value."""

from __future__ import annotations

import struct

import pytest

from credroam.gpo.model import GpoError, GpoVersion
from credroam.gpo.preg import delete_all_values_entry, delete_value_entry, make_entry
from credroam.gpo.resolve import (
    AUTHENTICATED_USERS,
    Denial,
    GpoContainer,
    Som,
    SomKind,
    access_check,
    applicable_gpos,
    merge_settings,
    som_chain,
    user_token,
)
from credroam.gpo.secdesc import (
    ACCESS_DENIED,
    ACCESS_DENIED_OBJECT,
    APPLY_GROUP_POLICY,
    CONTROL_ACCESS,
    INHERIT_ONLY,
    OBJECT_TYPE_PRESENT,
    READ_GPO,
    Ace,
    SecurityDescriptor,
    sid_bytes,
)
from credroam.gpo.settings import AGENT_POLICY, CREDENTIAL_ROAMING

DOMAIN = "DC=lab,DC=example"
ROAMING_OU = f"OU=RoamingUsers,{DOMAIN}"
TEAM_OU = f"OU=Team,{ROAMING_OU}"
SITE = "CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=lab,DC=example"
ALICE = "S-1-5-21-1-2-3-1105"
ROAMERS = "S-1-5-21-1-2-3-2001"  # a group alice is in
OTHERS = "S-1-5-21-1-2-3-2002"  # a group she is not in
ALICE_TOKEN = user_token(ALICE, [ROAMERS, "S-1-5-21-1-2-3-513"])
KEY = CREDENTIAL_ROAMING.key


# --- building inputs as the directory holds them ----------------------------------------------


def deny_ace(sid: str, mask: int) -> Ace:
    return Ace(ACCESS_DENIED, 0, struct.pack("<I", mask) + sid_bytes(sid))


def deny_apply_ace(sid: str) -> Ace:
    body = struct.pack("<II", CONTROL_ACCESS, OBJECT_TYPE_PRESENT) + APPLY_GROUP_POLICY.bytes_le
    return Ace(ACCESS_DENIED_OBJECT, 0, body + sid_bytes(sid))


def descriptor(*aces: Ace) -> bytes:
    return SecurityDescriptor(0x8004, None, None, None, 4, aces).pack()


# What a new GPO carries: Authenticated Users may read it and apply it.
DEFAULT_ACL = descriptor(
    Ace.allow(AUTHENTICATED_USERS, READ_GPO),
    Ace.allow_extended_right(AUTHENTICATED_USERS, APPLY_GROUP_POLICY),
)


def guid(n: int) -> str:
    return f"{{{n:08X}-0000-0000-0000-000000000000}}"


def gpo(n: int, *, acl: bytes = DEFAULT_ACL, flags: int = 0, version: int = 1 << 16,
        functionality: int | None = 2) -> GpoContainer:  # fmt: skip
    return GpoContainer(
        dn=f"CN={guid(n)},CN=Policies,CN=System,{DOMAIN}",
        name=f"gpo {n}",
        version=GpoVersion.from_number(version),
        security_descriptor=acl,
        flags=flags,
        functionality_version=functionality,
    )


def link(n: int, options: int = 0) -> str:
    """One gPLink entry: options 1 = disabled, 2 = enforced."""
    return f"[LDAP://cn={guid(n)},cn=policies,cn=system,{DOMAIN.lower()};{options}]"


def som(dn: str, kind: SomKind, *links: str, block: bool = False) -> Som:
    return Som(dn, kind, "".join(links) or None, 1 if block else 0)


def applied_names(soms, containers, token=ALICE_TOKEN) -> list[str]:
    result = applicable_gpos(soms, {c.dn: c for c in containers}, token)
    return [a.gpo.name for a in result.applied]


def denial(container: GpoContainer, token=ALICE_TOKEN) -> Denial | None:
    result = applicable_gpos(
        [som(DOMAIN, SomKind.DOMAIN, link(int(container.name.split()[1])))],
        {container.dn: container},
        token,
    )
    return result.denied[0].reason if result.denied else None


def tombstone(days: int):
    return make_entry(KEY, "DIMSRoamingTombstoneDays", "REG_DWORD", days)


def winner(soms, containers, values: dict[int, list]) -> tuple[int, str]:
    """The tombstone days in force and the name of the GPO that set them."""
    result = applicable_gpos(soms, {c.dn: c for c in containers}, ALICE_TOKEN)
    number = {a.gpo.name: int(a.gpo.name.split()[1]) for a in result.applied}
    merged = merge_settings([(a, values.get(number[a.gpo.name], [])) for a in result.applied])
    return merged.value("tombstone_days"), merged.sources["tombstone_days"].name


# --- the scope walk ---------------------------------------------------------------------------


def test_som_chain_is_the_domain_then_each_ou_from_the_top():
    assert som_chain(f"CN=alice,{TEAM_OU}", DOMAIN) == [
        (DOMAIN, SomKind.DOMAIN),
        (ROAMING_OU, SomKind.OU),
        (TEAM_OU, SomKind.OU),
    ]


def test_a_user_in_a_plain_container_gets_the_domain_alone():
    assert som_chain(f"CN=bob,CN=Users,{DOMAIN}", DOMAIN) == [(DOMAIN, SomKind.DOMAIN)]


def test_a_user_outside_the_domain_is_refused():
    with pytest.raises(GpoError, match="not inside the domain"):
        som_chain("CN=eve,OU=X,DC=other,DC=example", DOMAIN)


# --- order --------------------------------------------------------------------------------------


def test_within_a_container_link_order_1_is_applied_last_and_wins():
    # gPLink is stored lowest precedence first: gpo 2, the last entry, has link order 1.
    soms = [som(DOMAIN, SomKind.DOMAIN, link(1), link(2))]
    result = applicable_gpos(soms, {g.dn: g for g in (gpo(1), gpo(2))}, ALICE_TOKEN)
    assert [(a.gpo.name, a.link_order) for a in result.applied] == [("gpo 1", 2), ("gpo 2", 1)]
    assert winner(soms, [gpo(1), gpo(2)], {1: [tombstone(10)], 2: [tombstone(20)]}) == (
        20, "gpo 2")  # fmt: skip


def test_site_then_domain_then_ous_top_down_the_nearest_ou_wins():
    soms = [
        som(SITE, SomKind.SITE, link(1)),
        som(DOMAIN, SomKind.DOMAIN, link(2)),
        som(ROAMING_OU, SomKind.OU, link(3)),
        som(TEAM_OU, SomKind.OU, link(4)),
    ]
    containers = [gpo(n) for n in (1, 2, 3, 4)]
    assert applied_names(soms, containers) == ["gpo 1", "gpo 2", "gpo 3", "gpo 4"]
    values = {n: [tombstone(10 * n)] for n in (1, 2, 3, 4)}
    assert winner(soms, containers, values) == (40, "gpo 4")


def test_an_enforced_domain_link_wins_over_the_ous():
    soms = [som(DOMAIN, SomKind.DOMAIN, link(1, 2)), som(ROAMING_OU, SomKind.OU, link(2))]
    containers = [gpo(1), gpo(2)]
    assert applied_names(soms, containers) == ["gpo 2", "gpo 1"]
    assert winner(soms, containers, {1: [tombstone(30)], 2: [tombstone(45)]}) == (30, "gpo 1")


def test_enforced_higher_up_wins_over_enforced_lower_down():
    # Samba's client applies enforced GPOs lowest SOM last; Windows lets the highest win.
    soms = [
        som(SITE, SomKind.SITE, link(1, 2)),
        som(DOMAIN, SomKind.DOMAIN, link(2, 2)),
        som(TEAM_OU, SomKind.OU, link(3, 2), link(4)),
    ]
    containers = [gpo(n) for n in (1, 2, 3, 4)]
    assert applied_names(soms, containers) == ["gpo 4", "gpo 3", "gpo 2", "gpo 1"]
    values = {n: [tombstone(10 * n)] for n in (1, 2, 3, 4)}
    assert winner(soms, containers, values) == (10, "gpo 1")


def test_a_disabled_link_is_skipped():
    soms = [
        som(DOMAIN, SomKind.DOMAIN, link(1), link(2, 1)),
        som(ROAMING_OU, SomKind.OU, link(3, 3)),
    ]
    assert applied_names(soms, [gpo(1), gpo(2), gpo(3)]) == ["gpo 1"]


def test_a_gpo_linked_twice_applies_once_at_its_highest_precedence_link():
    soms = [som(DOMAIN, SomKind.DOMAIN, link(1)), som(ROAMING_OU, SomKind.OU, link(2), link(1))]
    result = applicable_gpos(soms, {g.dn: g for g in (gpo(1), gpo(2))}, ALICE_TOKEN)
    assert [(a.gpo.name, a.som) for a in result.applied] == [
        ("gpo 2", ROAMING_OU),
        ("gpo 1", ROAMING_OU),
    ]


# --- blocked inheritance ------------------------------------------------------------------------


def test_blocking_inheritance_drops_what_is_linked_above_but_keeps_the_own_links():
    soms = [
        som(SITE, SomKind.SITE, link(1)),
        som(DOMAIN, SomKind.DOMAIN, link(2)),
        som(ROAMING_OU, SomKind.OU, link(3), block=True),
        som(TEAM_OU, SomKind.OU, link(4)),
    ]
    assert applied_names(soms, [gpo(n) for n in (1, 2, 3, 4)]) == ["gpo 3", "gpo 4"]


def test_enforced_links_apply_through_blocked_inheritance():
    soms = [
        som(SITE, SomKind.SITE, link(1, 2)),
        som(DOMAIN, SomKind.DOMAIN, link(2), link(5, 2)),
        som(TEAM_OU, SomKind.OU, link(3), block=True),
    ]
    containers = [gpo(n) for n in (1, 2, 3, 5)]
    assert applied_names(soms, containers) == ["gpo 3", "gpo 5", "gpo 1"]
    values = {1: [tombstone(10)], 3: [tombstone(30)], 5: [tombstone(50)]}
    assert winner(soms, containers, values) == (10, "gpo 1")


def test_a_block_on_the_domain_drops_the_site():
    soms = [som(SITE, SomKind.SITE, link(1)), som(DOMAIN, SomKind.DOMAIN, link(2), block=True)]
    assert applied_names(soms, [gpo(1), gpo(2)]) == ["gpo 2"]


# --- filtering ----------------------------------------------------------------------------------

FILTERED_TO_ROAMERS = descriptor(
    Ace.allow(AUTHENTICATED_USERS, READ_GPO),
    Ace.allow(ROAMERS, READ_GPO),
    Ace.allow_extended_right(ROAMERS, APPLY_GROUP_POLICY),
)


def test_security_filtering_applies_through_a_group_of_the_token():
    assert denial(gpo(1, acl=FILTERED_TO_ROAMERS)) is None


def test_security_filtering_to_other_groups_denies_although_read_is_granted():
    # Samba's client checks Read only, so it would apply this GPO.
    acl = descriptor(
        Ace.allow(AUTHENTICATED_USERS, READ_GPO),
        Ace.allow_extended_right(OTHERS, APPLY_GROUP_POLICY),
    )
    assert denial(gpo(1, acl=acl)) is Denial.NO_APPLY


def test_a_deny_apply_ace_for_a_group_of_the_token_wins():
    acl = descriptor(
        deny_apply_ace(ROAMERS),
        Ace.allow(AUTHENTICATED_USERS, READ_GPO),
        Ace.allow_extended_right(AUTHENTICATED_USERS, APPLY_GROUP_POLICY),
    )
    assert denial(gpo(1, acl=acl)) is Denial.DENIED_APPLY
    other_token = user_token("S-1-5-21-1-2-3-1106", [OTHERS])
    assert denial(gpo(1, acl=acl), other_token) is None, "only members of the group are denied"


def test_deny_read_for_the_user_denies():
    acl = descriptor(deny_ace(ALICE, READ_GPO), *SecurityDescriptor.parse(DEFAULT_ACL).aces)
    assert denial(gpo(1, acl=acl)) is Denial.NO_READ


def test_apply_without_read_denies():
    acl = descriptor(Ace.allow_extended_right(AUTHENTICATED_USERS, APPLY_GROUP_POLICY))
    assert denial(gpo(1, acl=acl)) is Denial.NO_READ


def test_full_control_grants_apply_and_inherit_only_aces_do_not_count():
    full_control = 0x000F01FF
    assert denial(gpo(1, acl=descriptor(Ace.allow(ALICE, full_control)))) is None
    inherit_only = Ace(0, INHERIT_ONLY, Ace.allow(ALICE, full_control).body)
    assert denial(gpo(1, acl=descriptor(inherit_only))) is Denial.NO_READ


def test_access_check_follows_ace_order():
    allow_first = SecurityDescriptor.parse(descriptor(
        Ace.allow(AUTHENTICATED_USERS, READ_GPO),
        Ace.allow_extended_right(AUTHENTICATED_USERS, APPLY_GROUP_POLICY),
        deny_apply_ace(ROAMERS),
    ))  # fmt: skip
    assert access_check(allow_first, ALICE_TOKEN) is None, "an allow met first is kept"


def test_a_deny_ace_is_not_taken_for_security_filtering():
    acl = SecurityDescriptor.parse(descriptor(deny_apply_ace(ROAMERS)))
    assert acl.apply_trustees == []
    assert acl.aces[0].trustee == ROAMERS


# --- the GPO itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(0, None), (1, Denial.USER_DISABLED), (2, None), (3, Denial.USER_DISABLED)],
)
def test_user_configuration_disabled_denies_computer_disabled_does_not(flags, expected):
    assert denial(gpo(1, flags=flags)) is expected


def test_empty_invalid_and_missing_gpos_are_denied():
    assert denial(gpo(1, version=0)) is Denial.EMPTY
    assert denial(gpo(1, functionality=1)) is Denial.FUNCTIONALITY_VERSION
    result = applicable_gpos([som(DOMAIN, SomKind.DOMAIN, link(9))], {}, ALICE_TOKEN)
    assert [d.reason for d in result.denied] == [Denial.NOT_FOUND]
    assert denial(gpo(1, acl=b"\x01\x00")) is Denial.BAD_DESCRIPTOR


def test_a_denied_gpo_does_not_contribute_its_values():
    soms = [som(DOMAIN, SomKind.DOMAIN, link(1)), som(ROAMING_OU, SomKind.OU, link(2))]
    containers = [gpo(1), gpo(2, acl=descriptor(deny_apply_ace(ALICE)))]
    assert winner(soms, containers, {1: [tombstone(30)], 2: [tombstone(45)]}) == (30, "gpo 1")


# --- the merge ----------------------------------------------------------------------------------


def merged(*values_per_gpo: list):
    soms = [som(DOMAIN, SomKind.DOMAIN, *(link(n) for n in range(1, len(values_per_gpo) + 1)))]
    containers = {g.dn: g for g in (gpo(n) for n in range(1, len(values_per_gpo) + 1))}
    result = applicable_gpos(soms, containers, ALICE_TOKEN)
    return merge_settings(list(zip(result.applied, values_per_gpo, strict=True)))


def test_values_are_read_from_both_tables_with_their_source():
    settings = merged([
        tombstone(30),
        make_entry(KEY, "DIMSRoamingMaxNumTokens", "REG_DWORD", 500),
        make_entry(AGENT_POLICY.key, "SyncIntervalMinutes", "REG_DWORD", 15),
        make_entry(AGENT_POLICY.key, "ArchiveExpired", "REG_DWORD", 0),
    ])  # fmt: skip
    policy = settings.roaming_policy()
    assert (policy.tombstone_days, policy.max_tokens, policy.archive_expired) == (30, 500, False)
    assert policy.max_token_size == 65535, "unset: the default"
    assert settings.value("sync_interval_minutes") == 15
    source = settings.sources["sync_interval_minutes"]
    assert (source.guid, source.name, source.version, source.som) == (
        guid(1), "gpo 1", 1 << 16, DOMAIN)  # fmt: skip
    assert "max_token_size" not in settings.sources


def test_a_later_delete_removes_an_earlier_value():
    settings = merged([tombstone(30), make_entry(KEY, "DIMSRoamingMaxNumTokens", "REG_DWORD", 9)],
                      [delete_value_entry(KEY, "DIMSRoamingTombstoneDays")])  # fmt: skip
    assert settings.value("tombstone_days") == 60
    assert settings.value("max_tokens") == 9
    settings = merged([tombstone(30)], [delete_all_values_entry(KEY)])
    assert settings.values == {}


def test_registry_names_match_case_insensitively():
    settings = merged([make_entry(KEY.upper(), "dimsroamingtombstonedays", "REG_DWORD", 7)])
    assert settings.value("tombstone_days") == 7


def test_an_unusable_value_is_reported_and_falls_back_to_the_default():
    settings = merged(
        [tombstone(30)],
        [tombstone(4000), make_entry(KEY, "DIMSRoamingMaxNumTokens", "REG_SZ", "many")],
    )
    assert settings.value("tombstone_days") == 60, "the registry holds 4000, not 30"
    assert settings.value("max_tokens") == 2000
    assert len(settings.problems) == 2
    assert "gpo 2" in settings.problems[0] and "outside 1..3650" in settings.problems[0]


def test_group_policy_wins_over_the_local_configuration_which_wins_over_defaults():
    settings = merged([tombstone(30)])
    local = {"tombstone_days": 90, "max_tokens": 100, "keep_deleted_copy": False}
    policy = settings.roaming_policy(local)
    assert (policy.tombstone_days, policy.max_tokens, policy.keep_deleted_copy) == (30, 100, False)
    with pytest.raises(GpoError, match="max_tokens"):
        settings.value("max_tokens", {"max_tokens": 0})
