"""The schema sets the codec is generated for: protocol label -> root XSD (relative to the schemas dir)."""

SCHEMA_SETS: dict[str, tuple[str, str]] = {
    "apphand": ("apphand/V2G_CI_AppProtocol.xsd", "the supportedAppProtocol handshake"),
    "din": ("din/V2G_CI_MsgDef.xsd", "DIN SPEC 70121"),
    "iso2": ("iso2/V2G_CI_MsgDef.xsd", "ISO 15118-2:2014"),
    "iso20_common": ("iso20/V2G_CI_CommonMessages.xsd", "ISO 15118-20 common messages"),
    "iso20_ac": ("iso20/V2G_CI_AC.xsd", "ISO 15118-20 AC"),
    "iso20_dc": ("iso20/V2G_CI_DC.xsd", "ISO 15118-20 DC"),
    "iso20_acdp": ("iso20/V2G_CI_ACDP.xsd", "ISO 15118-20 ACDP"),
    "iso20_wpt": ("iso20/V2G_CI_WPT.xsd", "ISO 15118-20 WPT"),
    "xmldsig": ("iso20/xmldsig-core-schema.xsd", "W3C XML Signature (the -20 SignedInfo fragments)"),
}
