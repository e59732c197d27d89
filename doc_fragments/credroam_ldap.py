"""Doc fragment for the connection options every credroam directory module shares."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  server:
    description:
      - Host name or IP address of the domain controller to talk to.
      - Modules that must write to a particular DC (the schema master for schema changes) find it
        from this one and reconnect there with the same credentials and TLS settings.
    type: str
    required: true
  port:
    description:
      - TCP port. Defaults to 636 for O(tls_mode=ldaps) and 389 for O(tls_mode=starttls).
    type: int
  tls_mode:
    description:
      - How the connection is protected. Plain LDAP is not offered; roaming data and passwords only
        travel inside TLS.
    type: str
    choices: [ldaps, starttls]
    default: ldaps
  validate_certs:
    description:
      - Validate the DC's certificate against O(ca_cert) (or the system trust store) and its name.
      - Setting this to V(false) is an explicit opt-out for throw-away labs only; it allows a
        machine in the middle to read every credential that is roamed.
    type: bool
    default: true
  ca_cert:
    description:
      - PEM file with the CA certificate(s) that issued the DC certificates.
    type: path
  tls_server_name:
    description:
      - Name the DC certificate must carry, when O(server) is an address the certificate does not
        list (for example a DC reached by IP whose certificate names only its FQDN).
      - When given, the certificate must name it; a certificate that names only O(server) is
        refused.
    type: str
  bind_method:
    description:
      - V(simple) binds with O(bind_user) and O(bind_password) (inside TLS).
      - V(gssapi) binds with Kerberos as the owner of the caller's ticket (run C(kinit) first;
        C(KRB5CCNAME) names the credential cache, C(KRB5_CONFIG) the Kerberos settings) and
        needs the Python C(gssapi) package. The ticket is for C(ldap/<tls_server_name>), or
        C(ldap/<server>) without O(tls_server_name), so give the DC's FQDN there when O(server)
        is an address. The DC must accept a SASL bind without a signing layer inside TLS (Samba
        C(ldap server require strong auth = allow_sasl_over_tls)).
    type: str
    choices: [simple, gssapi]
    default: simple
  bind_user:
    description:
      - User to bind as, as a UPN (C(admin@example.com)), a DN or C(DOMAIN\\user).
      - With O(bind_method=gssapi), optional - the Kerberos principal whose ticket to use, when
        the credential cache holds several. A UPN's domain is taken as the realm in upper case
        (C(admin@example.com) is C(admin@EXAMPLE.COM)).
    type: str
  bind_password:
    description:
      - Password of O(bind_user).
    type: str
  timeout:
    description:
      - Seconds to wait for the DC to connect or answer.
    type: int
    default: 10
requirements:
  - ldap3
"""
