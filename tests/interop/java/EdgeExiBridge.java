// Test-side bridge to the EXIficient codec bundled in Josev's EXICodec.jar
// (PyPI iso15118==0.31.2, iso15118/shared/EXICodec.jar).
//
// Compiled at setup time (tests/interop/exificient_setup.py) against that jar and
// driven from tests/interop/exificient_server.py through py4j.  It uses the
// jar's own precompiled V2G grammars (com.siemens.ct.exi.main.generatedgrammar.*)
// and feeds EXIficient plain XML through SAX, exactly like Josev's
// AbstractEXICodec does internally after its JSON -> JAXB -> XML step.
//
// Two option sets ("modes"):
//   josev   - the factory exactly as AbstractEXICodec configures it:
//             DefaultEXIFactory + valueMaxLength=0, valuePartitionCapacity=0,
//             maximumNumberOfBuiltInElementGrammars=0, maximumNumberOfBuiltInProductions=0
//             (no value is ever added to the string table, grammar learning off).
//   default - DefaultEXIFactory untouched (EXI default options: string table unbounded).
// Both: schema-informed, bit-packed, non-strict, no cookie, no options in header.

import com.siemens.ct.exi.core.EXIFactory;
import com.siemens.ct.exi.core.FidelityOptions;
import com.siemens.ct.exi.core.grammars.Grammars;
import com.siemens.ct.exi.core.helpers.DefaultEXIFactory;
import com.siemens.ct.exi.main.api.sax.EXIResult;
import com.siemens.ct.exi.main.api.sax.EXISource;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.io.StringWriter;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import javax.xml.parsers.SAXParserFactory;
import javax.xml.transform.OutputKeys;
import javax.xml.transform.Transformer;
import javax.xml.transform.TransformerFactory;
import javax.xml.transform.sax.SAXSource;
import javax.xml.transform.stream.StreamResult;

import org.xml.sax.InputSource;
import org.xml.sax.XMLReader;
import org.xml.sax.helpers.DefaultHandler;

public final class EdgeExiBridge {

    private static final String GG = "com.siemens.ct.exi.main.generatedgrammar.";

    /** proto -> {grammar class simple name, "fragment" or ""} */
    private static final Map<String, String[]> PROTOS = new HashMap<>();

    static {
        PROTOS.put("apphand", new String[] {"CommonAppProtocol", ""});
        PROTOS.put("din", new String[] {"DINSpec_70121", ""});
        PROTOS.put("iso2", new String[] {"ISO15118_2Grammar", ""});
        PROTOS.put("iso20-common", new String[] {"ISO15118_20_V2G_CI_CommonMessages", ""});
        PROTOS.put("iso20-ac", new String[] {"ISO15118_20_V2G_CI_AC", ""});
        PROTOS.put("iso20-dc", new String[] {"ISO15118_20_V2G_CI_DC", ""});
        PROTOS.put("iso20-acdp", new String[] {"ISO15118_20_V2G_CI_ACDP", ""});
        PROTOS.put("iso20-wpt", new String[] {"ISO15118_20_V2G_CI_WPT", ""});
        // EXI fragments (signature digests): the message-set grammar in fragment mode,
        // as Josev does for -2 (AuthorizationReq, SignedInfo, ...) and -20
        // (PnC_AReqAuthorizationMode, OEMProvisioningCertificateChain).
        PROTOS.put("iso2-fragment", new String[] {"ISO15118_2Grammar", "fragment"});
        PROTOS.put("iso20-fragment", new String[] {"ISO15118_20_V2G_CI_CommonMessages", "fragment"});
        PROTOS.put("din-fragment", new String[] {"DINSpec_70121", "fragment"});
        // xmldsig-core-schema.xsd grammar alone, fragment mode (Josev's "XSDCore").
        PROTOS.put("xmldsig-fragment", new String[] {"XMLDSIG_Core_Schema_Grammar", "fragment"});
    }

    private final Map<String, Grammars> grammars = new HashMap<>();
    private final Map<String, EXIFactory> factories = new HashMap<>();
    private final SAXParserFactory saxParserFactory;
    private final TransformerFactory transformerFactory;
    // reused across calls (the bridge is single-threaded; py4j serialises our calls)
    private XMLReader xmlReader;
    private Transformer identity;

    public EdgeExiBridge() {
        saxParserFactory = SAXParserFactory.newInstance();
        saxParserFactory.setNamespaceAware(true);
        transformerFactory = TransformerFactory.newInstance();
    }

    public static String[] protocols() {
        String[] names = PROTOS.keySet().toArray(new String[0]);
        Arrays.sort(names);
        return names;
    }

    /** "xsd:PATH" / "xsd-fragment:PATH": grammars built from any XSD file at run time (tests of our
     *  schema compiler on small schemas), document or fragment mode. */
    private static final String XSD = "xsd:";
    private static final String XSD_FRAGMENT = "xsd-fragment:";

    private static String xsdPath(String proto) {
        if (proto.startsWith(XSD)) {
            return proto.substring(XSD.length());
        }
        if (proto.startsWith(XSD_FRAGMENT)) {
            return proto.substring(XSD_FRAGMENT.length());
        }
        return null;
    }

    private static boolean isFragment(String proto) {
        String[] spec = PROTOS.get(proto);
        return spec != null ? "fragment".equals(spec[1]) : proto.startsWith(XSD_FRAGMENT);
    }

    private Grammars grammar(String proto) throws Exception {
        String xsd = xsdPath(proto);
        if (xsd != null) {
            Grammars g = grammars.get(XSD + xsd);
            if (g == null) {
                g = com.siemens.ct.exi.grammars.GrammarFactory.newInstance().createGrammars(xsd);
                grammars.put(XSD + xsd, g);
            }
            return g;
        }
        String[] spec = PROTOS.get(proto);
        if (spec == null) {
            throw new IllegalArgumentException("unknown proto '" + proto + "'; known: "
                    + String.join(", ", protocols()));
        }
        Grammars g = grammars.get(spec[0]);
        if (g == null) {
            g = (Grammars) Class.forName(GG + spec[0]).getDeclaredConstructor().newInstance();
            grammars.put(spec[0], g);
        }
        return g;
    }

    /** Builds (and caches) the factory for proto/mode; strict=true only for the validity pre-check. */
    private EXIFactory factory(String proto, String mode, boolean strict) throws Exception {
        String key = proto + "|" + mode + "|" + strict;
        EXIFactory f = factories.get(key);
        if (f != null) {
            return f;
        }
        f = DefaultEXIFactory.newInstance();
        if ("josev".equals(mode)) {
            // exactly AbstractEXICodec's constructor
            f.setValueMaxLength(0);
            f.setValuePartitionCapacity(0);
            f.setMaximumNumberOfBuiltInElementGrammars(0);
            f.setMaximumNumberOfBuiltInProductions(0);
        } else if (!"default".equals(mode)) {
            throw new IllegalArgumentException("unknown mode '" + mode + "' (josev|default)");
        }
        if (strict) {
            f.setFidelityOptions(FidelityOptions.createStrict());
        }
        f.setGrammars(grammar(proto));
        f.setFragment(isFragment(proto));
        factories.put(key, f);
        return f;
    }

    private byte[] encodeWith(EXIFactory f, String xml) throws Exception {
        ByteArrayOutputStream os = new ByteArrayOutputStream(256);
        EXIResult result = new EXIResult(f);
        result.setOutputStream(os);
        if (xmlReader == null) {
            xmlReader = saxParserFactory.newSAXParser().getXMLReader();
        }
        XMLReader reader = xmlReader;
        xmlReader = null; // a reader that failed mid-parse is not reused
        reader.setContentHandler(result.getHandler());
        reader.parse(new InputSource(new StringReader(xml)));
        reader.setContentHandler(null);
        xmlReader = reader;
        return os.toByteArray();
    }

    /**
     * XML text -> EXI bytes (EXI header 0x80 included, no V2GTP header).
     * With check=true the document is first encoded once with the *strict* grammars of the
     * same schema; that throws on anything the schema does not declare (unknown or misplaced
     * element, wrong namespace, value not of the declared type, bad enumeration, integer out
     * of range).  The non-strict encoder would instead silently use deviation productions.
     */
    public byte[] encode(String proto, String xml, String mode, boolean check) throws Exception {
        if (check) {
            try {
                encodeWith(factory(proto, mode, true), xml);
            } catch (org.xml.sax.SAXParseException e) {
                throw new IllegalArgumentException(malformed(e), e);
            } catch (Exception e) {
                throw new IllegalArgumentException("not schema-valid for " + proto
                        + " (strict EXI encoding failed" + where(e) + "): " + rootCause(e), e);
            }
        }
        try {
            return encodeWith(factory(proto, mode, false), xml);
        } catch (org.xml.sax.SAXParseException e) {
            throw new IllegalArgumentException(malformed(e), e);
        }
    }

    private static String malformed(org.xml.sax.SAXParseException e) {
        return "malformed XML (line " + e.getLineNumber() + ", column " + e.getColumnNumber()
                + "): " + e.getMessage();
    }

    /** EXI bytes -> XML text (no XML declaration, no indentation, generated prefixes). */
    public String decode(String proto, byte[] data, String mode) throws Exception {
        EXISource source = new EXISource(factory(proto, mode, false));
        XMLReader reader = source.getXMLReader();
        Transformer t = identity;
        identity = null; // a transformer that failed mid-way is not reused
        if (t == null) {
            t = transformerFactory.newTransformer();
            t.setOutputProperty(OutputKeys.OMIT_XML_DECLARATION, "yes");
        }
        StringWriter sw = new StringWriter();
        t.transform(new SAXSource(reader, new InputSource(new ByteArrayInputStream(data))),
                new StreamResult(sw));
        t.reset();
        t.setOutputProperty(OutputKeys.OMIT_XML_DECLARATION, "yes");
        identity = t;
        return sw.toString();
    }

    /** EXI bytes -> SAX events into a no-op handler (pure decoder cost, for benchmarks). */
    public void decodeToNull(String proto, byte[] data, String mode) throws Exception {
        EXISource source = new EXISource(factory(proto, mode, false));
        XMLReader reader = source.getXMLReader();
        reader.setContentHandler(new DefaultHandler());
        reader.parse(new InputSource(new ByteArrayInputStream(data)));
    }

    /** Human-readable description of the factory used for proto/mode. */
    public String factoryInfo(String proto, String mode) throws Exception {
        // DefaultEXIFactory.toString() casts to SchemaInformedGrammars, which the
        // precompiled grammars are not, so describe it by hand.
        EXIFactory f = factory(proto, mode, false);
        return "grammars=" + f.getGrammars().getClass().getSimpleName()
                + " schemaInformed=" + f.getGrammars().isSchemaInformed()
                + " codingMode=" + f.getCodingMode()
                + " fidelity=" + f.getFidelityOptions()
                + " fragment=" + f.isFragment()
                + " encodingOptions=" + f.getEncodingOptions()
                + " valueMaxLength=" + f.getValueMaxLength()
                + " valuePartitionCapacity=" + f.getValuePartitionCapacity()
                + " localValuePartitions=" + f.isLocalValuePartitions()
                + " maxBuiltInElementGrammars=" + f.getMaximumNumberOfBuiltInElementGrammars()
                + " maxBuiltInProductions=" + f.getMaximumNumberOfBuiltInProductions()
                + " blockSize=" + f.getBlockSize();
    }

    /**
     * In-JVM timing. kind: "encode" (payload = XML, no strict pre-check),
     * "decode" (payload = hex, to XML text), "decode-sax" (payload = hex, to no-op handler).
     * Runs `warmup` untimed then `iterations` timed calls; returns
     * "median_ns min_ns mean_ns" as a string.
     */
    public String bench(String kind, String proto, String payload, String mode, int warmup,
            int iterations) throws Exception {
        byte[] data = null;
        if (!"encode".equals(kind)) {
            data = fromHex(payload);
        }
        EXIFactory f = factory(proto, mode, false);
        long[] times = new long[iterations];
        for (int i = -warmup; i < iterations; i++) {
            long t0 = System.nanoTime();
            switch (kind) {
                case "encode":
                    encodeWith(f, payload);
                    break;
                case "decode":
                    decode(proto, data, mode);
                    break;
                case "decode-sax":
                    decodeToNull(proto, data, mode);
                    break;
                default:
                    throw new IllegalArgumentException("unknown bench kind " + kind);
            }
            long dt = System.nanoTime() - t0;
            if (i >= 0) {
                times[i] = dt;
            }
        }
        long[] sorted = times.clone();
        Arrays.sort(sorted);
        long sum = 0;
        for (long t : times) {
            sum += t;
        }
        long median = sorted.length % 2 == 1 ? sorted[sorted.length / 2]
                : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
        return median + " " + sorted[0] + " " + (sum / Math.max(1, times.length));
    }

    public static byte[] fromHex(String s) {
        int n = s.length();
        if (n % 2 != 0) {
            throw new IllegalArgumentException("odd-length hex string");
        }
        byte[] out = new byte[n / 2];
        for (int i = 0; i < n; i += 2) {
            int hi = Character.digit(s.charAt(i), 16);
            int lo = Character.digit(s.charAt(i + 1), 16);
            if (hi < 0 || lo < 0) {
                throw new IllegalArgumentException("bad hex digit near offset " + i);
            }
            out[i / 2] = (byte) ((hi << 4) | lo);
        }
        return out;
    }

    /** " at <SAX event>" from the first SAXException in the chain ("startElement: X"). */
    private static String where(Throwable e) {
        for (Throwable t = e; t != null && t.getCause() != t; t = t.getCause()) {
            if (t instanceof org.xml.sax.SAXException && t.getMessage() != null
                    && !t.getMessage().contains("Exception")) {
                return " at " + t.getMessage();
            }
        }
        return "";
    }

    private static String rootCause(Throwable e) {
        Throwable t = e;
        while (t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        if (t instanceof ClassCastException) {
            // EXIficient reaches a SchemaInformedGrammars cast only for undeclared content
            return "not allowed here by the schema (undeclared element, wrong namespace, wrong order, or required content missing)";
        }
        return t.getClass().getSimpleName() + ": " + t.getMessage();
    }

    /** Exception chain as one line: "Type: msg <- Cause: msg". */
    public static String describe(Throwable e) {
        if (e instanceof IllegalArgumentException && e.getMessage() != null) {
            return e.getMessage(); // the bridge's own messages are complete
        }
        StringBuilder sb = new StringBuilder();
        Throwable t = e;
        int depth = 0;
        while (t != null && depth < 6) {
            if (sb.length() > 0) {
                sb.append(" <- ");
            }
            sb.append(t.getClass().getName()).append(": ").append(String.valueOf(t.getMessage()));
            if (t.getCause() == t) {
                break;
            }
            t = t.getCause();
            depth++;
        }
        return sb.toString();
    }
}
