/*
 * test_pattern.c - golden tests of EventBridge event patterns
 * (src/rules/pattern.h, docs/patterns.md): every operator and its edge
 * cases, written from EventBridge's documented semantics, over one event
 * rendered as reads render it; then malformed patterns, unknown operators
 * and the limits, each with the exact "path: reason" error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/pattern.h"
#include "testutil.h"

/* The event every golden case runs against (unless a case gives its own
 * data or metadata, or asks for no tags / non-JSON data). */
static const char *const EV_DATA =
    "{\"amount\": 250.5, \"count\": 3, \"neg\": -1.5, \"currency\": \"EUR\","
    " \"customer\": {\"name\": \"Alice Smith\", \"country\": \"FR\", \"vip\": true,"
    "  \"email\": \"Alice@Example.COM\", \"city\": \"\xc3\x89vry\"},"
    " \"items\": [{\"sku\": \"A-1\", \"qty\": 2}, {\"sku\": \"B-2\", \"qty\": 1}],"
    " \"labels\": [\"new\", \"promo\"], \"note\": \"\", \"coupon\": null,"
    " \"ip\": \"10.0.0.33\", \"ip6\": \"2001:db8::1\", \"path\": \"/usr/lib/x.so\","
    " \"empty\": [], \"obj\": {\"c1\": 100}, \"big\": 18446744073709551615,"
    " \"escaped\": \"a\\\"b\\u00e9\", \"star\": \"a*b\", \"rep\": \"abcabc\","
    " \"k\\u00e9y\": 1, \"a.b\": 1, \"nested\": [[1, [2]], {\"deep\": [\"x\"]}]}";
#define EV_ORDERS                                                                          \
    "{\"o\": [{\"l\": [{\"s\": \"x\", \"q\": 3}, {\"s\": \"z\", \"q\": 4}], \"t\": [\"t1\"]},"           \
    " {\"l\": [{\"s\": \"y\"}], \"t\": [\"t2\"]}]}"
static const char *const EV_META = "{\"correlationId\": \"c-1\", \"actor\": \"bob\"}";

enum { F_NOTAGS = 1, F_RAWDATA = 2, F_NOMETA = 4 };

typedef struct golden {
    const char *pattern;
    int want;
    const char *data; /* NULL: EV_DATA */
    int flags;
} golden;

static const golden G[] = {
    /* ---- exact values on the event's own fields */
    {"{\"type\": [\"OrderPlaced\"]}", 1, NULL, 0},
    {"{\"type\": [\"orderplaced\"]}", 0, NULL, 0},
    {"{\"type\": [\"X\", \"OrderPlaced\"]}", 1, NULL, 0},
    {"{\"stream\": [\"Order-123\"], \"category\": [\"Order\"]}", 1, NULL, 0},
    {"{\"category\": [\"Order-123\"]}", 0, NULL, 0},
    {"{\"revision\": [5]}", 1, NULL, 0},
    {"{\"revision\": [5.0]}", 1, NULL, 0},
    {"{\"revision\": [50e-1]}", 1, NULL, 0},
    {"{\"revision\": [\"5\"]}", 0, NULL, 0},
    {"{\"revision\": [6]}", 0, NULL, 0},
    {"{\"position\": [1234]}", 1, NULL, 0},
    {"{\"id\": [\"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\"]}", 1, NULL, 0},
    {"{\"id\": [\"0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B\"]}", 0, NULL, 0},
    {"{\"created\": [\"2026-12-06T10:20:30.123456Z\"]}", 1, NULL, 0},
    {"{\"created\": [{\"prefix\": \"2026-12-06T10:20\"}]}", 1, NULL, 0},
    {"{\"created\": [\"2026-12-06T10:20:30Z\"]}", 0, NULL, 0},
    {"{\"tags\": [\"vip\"]}", 1, NULL, 0},
    {"{\"tags\": [\"x\", \"eu\"]}", 1, NULL, 0},
    {"{\"tags\": [\"none\"]}", 0, NULL, 0},
    {"{\"tags\": [\"vip\"]}", 0, NULL, F_NOTAGS},
    /* ---- exact values in data */
    {"{\"data\": {\"amount\": [250.5]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [250.50]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [2.505e2]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [250]}}", 0, NULL, 0},
    {"{\"data\": {\"amount\": [\"250.5\"]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [\"EUR\"]}}", 1, NULL, 0},
    {"{\"data\": {\"customer\": {\"vip\": [true]}}}", 1, NULL, 0},
    {"{\"data\": {\"customer\": {\"vip\": [false]}}}", 0, NULL, 0},
    {"{\"data\": {\"customer\": {\"vip\": [\"true\"]}}}", 0, NULL, 0},
    {"{\"data\": {\"coupon\": [null]}}", 1, NULL, 0},
    {"{\"data\": {\"note\": [null]}}", 0, NULL, 0},
    /* empty string: matches "" only, never null */
    {"{\"data\": {\"note\": [\"\"]}}", 1, NULL, 0},
    {"{\"data\": {\"coupon\": [\"\"]}}", 0, NULL, 0},
    {"{\"data\": {\"missing\": [\"x\"]}}", 0, NULL, 0},
    {"{\"data\": {\"escaped\": [\"a\\\"b\\u00e9\"]}}", 1, NULL, 0},
    {"{\"data\": {\"escaped\": [\"a\\\"b\xc3\xa9\"]}}", 1, NULL, 0},
    {"{\"data\": {\"big\": [18446744073709551615]}}", 1, NULL, 0},
    {"{\"data\": {\"big\": [18446744073709551614]}}", 0, NULL, 0},
    /* arrays: values inside arrays (of objects too) are the field's values */
    {"{\"data\": {\"items\": {\"sku\": [\"B-2\"]}}}", 1, NULL, 0},
    {"{\"data\": {\"items\": {\"qty\": [2]}}}", 1, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [\"C-3\"]}}}", 0, NULL, 0},
    {"{\"data\": {\"labels\": [\"promo\"]}}", 1, NULL, 0},
    {"{\"data\": {\"labels\": [\"old\", \"new\"]}}", 1, NULL, 0},
    {"{\"data\": {\"labels\": [\"old\"]}}", 0, NULL, 0},
    {"{\"data\": {\"nested\": [2]}}", 1, NULL, 0},
    {"{\"data\": {\"nested\": {\"deep\": [\"x\"]}}}", 1, NULL, 0},
    /* array-consistent matching: fields inside objects of different
     * elements of one array do not match together */
    {"{\"data\": {\"items\": {\"sku\": [\"A-1\"], \"qty\": [2]}}}", 1, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [\"A-1\"], \"qty\": [1]}}}", 0, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [\"B-2\"], \"qty\": [{\"numeric\": [\"<\", 2]}]}}}", 1,
     NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [\"A-1\"], \"qty\": [{\"exists\": true}]}}}", 1, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [\"A-1\"], \"$or\": [{\"qty\": [1]}, {\"qty\": [5]}]}}}",
     0, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [\"A-1\"], \"$or\": [{\"qty\": [1]}, {\"qty\": [2]}]}}}",
     1, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [{\"anything-but\": \"A-1\"}], \"qty\": [2]}}}", 0, NULL,
     0},
    {"{\"data\": {\"labels\": [\"new\"], \"items\": {\"sku\": [\"B-2\"]}}}", 1, NULL, 0},
    {"{\"data\": {\"labels\": [\"new\"], \"$or\": [{\"labels\": [\"promo\"]}, {\"count\": [9]}]}}",
     1, NULL, 0},
    {"{\"data\": {\"o\": {\"l\": {\"s\": [\"x\"]}, \"t\": [\"t1\"]}}}", 1, EV_ORDERS, 0},
    {"{\"data\": {\"o\": {\"l\": {\"s\": [\"x\"]}, \"t\": [\"t2\"]}}}", 0, EV_ORDERS, 0},
    {"{\"data\": {\"o\": {\"l\": {\"s\": [\"y\"]}, \"t\": [\"t2\"]}}}", 1, EV_ORDERS, 0},
    {"{\"data\": {\"o\": {\"l\": {\"s\": [\"x\"], \"q\": [3]}}}}", 1, EV_ORDERS, 0},
    {"{\"data\": {\"o\": {\"l\": {\"s\": [\"x\"], \"q\": [4]}}}}", 0, EV_ORDERS, 0},
    {"{\"data\": {\"m\": {\"a\": [1], \"b\": [2]}}}", 0, "{\"m\": [[{\"a\": 1}], [{\"b\": 2}]]}", 0},
    {"{\"data\": {\"m\": {\"a\": [1], \"b\": [2]}}}", 0, "{\"m\": [[{\"a\": 1}, {\"b\": 2}]]}", 0},
    {"{\"data\": {\"m\": {\"a\": [1], \"b\": [2]}}}", 1, "{\"m\": [[{\"a\": 1, \"b\": 2}]]}", 0},
    /* an object is not a value */
    {"{\"data\": {\"customer\": [\"x\"]}}", 0, NULL, 0},
    {"{\"data\": {\"customer\": {\"country\": [\"FR\"], \"vip\": [true]}}}", 1, NULL, 0},
    {"{\"data\": {\"customer\": {\"country\": [\"DE\"], \"vip\": [true]}}}", 0, NULL, 0},
    {"{\"type\": [\"OrderPlaced\"], \"data\": {\"currency\": [\"USD\"]}}", 0, NULL, 0},
    /* keys: escapes decoded; a dot in a key is not a path step */
    {"{\"data\": {\"k\xc3\xa9y\": [1]}}", 1, NULL, 0},
    {"{\"data\": {\"a.b\": [1]}}", 1, NULL, 0},
    {"{\"data\": {\"a\": {\"b\": [1]}}}", 0, NULL, 0},
    /* data that is a scalar or an array */
    {"{\"data\": [5]}", 1, "5", 0},
    {"{\"data\": [\"x\", 7]}", 1, "[1, 7, {\"a\": 2}]", 0},
    {"{\"data\": {\"a\": [2]}}", 1, "[1, 7, {\"a\": 2}]", 0},
    /* ---- prefix, suffix and their ignore-case forms */
    {"{\"data\": {\"currency\": [{\"prefix\": \"EU\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"prefix\": \"eu\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"prefix\": \"\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"prefix\": \"EURO\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"amount\": [{\"prefix\": \"25\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"prefix\": {\"equals-ignore-case\": \"eu\"}}]}}", 1, NULL, 0},
    {"{\"data\": {\"customer\": {\"name\": [{\"prefix\": {\"equals-ignore-case\": \"ALICE \"}}]}}}", 1,
     NULL, 0},
    {"{\"data\": {\"customer\": {\"name\": [{\"prefix\": {\"equals-ignore-case\": \"bob\"}}]}}}", 0,
     NULL, 0},
    {"{\"data\": {\"path\": [{\"suffix\": \".so\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"path\": [{\"suffix\": \".SO\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"path\": [{\"suffix\": {\"equals-ignore-case\": \".SO\"}}]}}", 1, NULL, 0},
    {"{\"data\": {\"path\": [{\"suffix\": {\"equals-ignore-case\": \".dll\"}}]}}", 0, NULL, 0},
    {"{\"data\": {\"labels\": [{\"suffix\": \"mo\"}]}}", 1, NULL, 0},
    {"{\"stream\": [{\"suffix\": \"-123\"}]}", 1, NULL, 0},
    /* ---- equals-ignore-case */
    {"{\"data\": {\"customer\": {\"email\": [{\"equals-ignore-case\": \"alice@example.com\"}]}}}", 1,
     NULL, 0},
    {"{\"data\": {\"customer\": {\"email\": [{\"equals-ignore-case\": \"alice@example\"}]}}}", 0,
     NULL, 0},
    {"{\"data\": {\"customer\": {\"city\": [{\"equals-ignore-case\": \"\xc3\xa9VRY\"}]}}}", 1, NULL,
     0},
    {"{\"type\": [{\"equals-ignore-case\": \"ORDERPLACED\"}]}", 1, NULL, 0},
    {"{\"data\": {\"count\": [{\"equals-ignore-case\": \"3\"}]}}", 0, NULL, 0},
    /* ---- wildcard */
    {"{\"data\": {\"path\": [{\"wildcard\": \"/usr/*/x.so\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"path\": [{\"wildcard\": \"*lib*\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"path\": [{\"wildcard\": \"/usr/lib/x.so\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"path\": [{\"wildcard\": \"/usr/lib/x.s\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"path\": [{\"wildcard\": \"*.dll\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"path\": [{\"wildcard\": \"*\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"note\": [{\"wildcard\": \"*\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"rep\": [{\"wildcard\": \"abc*abc\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"rep\": [{\"wildcard\": \"abc*abcabc\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"rep\": [{\"wildcard\": \"a*c*c\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"rep\": [{\"wildcard\": \"*b*b*\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"rep\": [{\"wildcard\": \"*b*b*b*\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"star\": [{\"wildcard\": \"a\\\\*b\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"rep\": [{\"wildcard\": \"a\\\\*c\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"count\": [{\"wildcard\": \"*\"}]}}", 0, NULL, 0},
    /* ---- anything-but */
    {"{\"data\": {\"currency\": [{\"anything-but\": \"USD\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": \"EUR\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": [\"EUR\", \"USD\"]}]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": [\"GBP\", \"USD\"]}]}}", 1, NULL, 0},
    {"{\"data\": {\"count\": [{\"anything-but\": 3}]}}", 0, NULL, 0},
    {"{\"data\": {\"count\": [{\"anything-but\": 3.0}]}}", 0, NULL, 0},
    {"{\"data\": {\"count\": [{\"anything-but\": [1, 2]}]}}", 1, NULL, 0},
    {"{\"data\": {\"count\": [{\"anything-but\": \"x\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": 3}]}}", 1, NULL, 0},
    {"{\"data\": {\"coupon\": [{\"anything-but\": \"x\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"missing\": [{\"anything-but\": \"x\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"customer\": [{\"anything-but\": \"x\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"labels\": [{\"anything-but\": \"new\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"labels\": [{\"anything-but\": [\"new\", \"promo\"]}]}}", 0, NULL, 0},
    {"{\"type\": [{\"anything-but\": \"OrderPlaced\"}]}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": {\"prefix\": \"E\"}}]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": {\"prefix\": \"U\"}}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": {\"prefix\": [\"U\", \"E\"]}}]}}", 0, NULL, 0},
    {"{\"data\": {\"path\": [{\"anything-but\": {\"suffix\": \".so\"}}]}}", 0, NULL, 0},
    {"{\"data\": {\"path\": [{\"anything-but\": {\"suffix\": [\".dll\", \".exe\"]}}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"anything-but\": {\"equals-ignore-case\": \"eur\"}}]}}", 0, NULL,
     0},
    {"{\"data\": {\"currency\": [{\"anything-but\": {\"equals-ignore-case\": [\"usd\", \"gbp\"]}}]}}",
     1, NULL, 0},
    {"{\"data\": {\"path\": [{\"anything-but\": {\"wildcard\": \"*/lib/*\"}}]}}", 0, NULL, 0},
    {"{\"data\": {\"path\": [{\"anything-but\": {\"wildcard\": [\"*/bin/*\", \"*.jar\"]}}]}}", 1,
     NULL, 0},
    /* ---- numeric */
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", 0, \"<=\", 250.5]}]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", 0, \"<\", 250.5]}]}}", 0, NULL, 0},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">=\", 250.5]}]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", 250.5]}]}}", 0, NULL, 0},
    {"{\"data\": {\"amount\": [{\"numeric\": [\"=\", 250.5]}]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [{\"numeric\": [\"=\", 2.505e2]}]}}", 1, NULL, 0},
    {"{\"data\": {\"amount\": [{\"numeric\": [\"<\", 10]}]}}", 0, NULL, 0},
    {"{\"data\": {\"count\": [{\"numeric\": [\"=\", 3]}]}}", 1, NULL, 0},
    {"{\"data\": {\"neg\": [{\"numeric\": [\">=\", -2, \"<\", -1]}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"numeric\": [\">\", 0]}]}}", 0, NULL, 0},
    {"{\"data\": {\"items\": {\"qty\": [{\"numeric\": [\">\", 1]}]}}}", 1, NULL, 0},
    {"{\"data\": {\"items\": {\"qty\": [{\"numeric\": [\">\", 2]}]}}}", 0, NULL, 0},
    {"{\"revision\": [{\"numeric\": [\">=\", 5, \"<\", 6]}]}", 1, NULL, 0},
    {"{\"position\": [{\"numeric\": [\">\", 1000]}]}", 1, NULL, 0},
    {"{\"position\": [{\"numeric\": [\"<=\", 1233]}]}", 0, NULL, 0},
    {"{\"data\": {\"big\": [{\"numeric\": [\">\", 18446744073709551614]}]}}", 1, NULL, 0},
    /* ---- exists (leaf nodes only) */
    {"{\"data\": {\"currency\": [{\"exists\": true}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [{\"exists\": false}]}}", 0, NULL, 0},
    {"{\"data\": {\"missing\": [{\"exists\": false}]}}", 1, NULL, 0},
    {"{\"data\": {\"missing\": [{\"exists\": true}]}}", 0, NULL, 0},
    {"{\"data\": {\"customer\": [{\"exists\": true}]}}", 0, NULL, 0},
    {"{\"data\": {\"customer\": [{\"exists\": false}]}}", 1, NULL, 0},
    {"{\"data\": {\"obj\": {\"c1\": [{\"exists\": true}]}}}", 1, NULL, 0},
    {"{\"data\": {\"coupon\": [{\"exists\": true}]}}", 1, NULL, 0},
    {"{\"data\": {\"note\": [{\"exists\": true}]}}", 1, NULL, 0},
    {"{\"data\": {\"empty\": [{\"exists\": true}]}}", 0, NULL, 0},
    {"{\"data\": {\"empty\": [{\"exists\": false}]}}", 1, NULL, 0},
    {"{\"data\": {\"labels\": [{\"exists\": true}]}}", 1, NULL, 0},
    {"{\"data\": {\"items\": {\"sku\": [{\"exists\": true}]}}}", 1, NULL, 0},
    {"{\"data\": {\"items\": [{\"exists\": true}]}}", 0, NULL, 0},
    {"{\"tags\": [{\"exists\": true}]}", 1, NULL, 0},
    {"{\"tags\": [{\"exists\": false}]}", 1, NULL, F_NOTAGS},
    {"{\"type\": [{\"exists\": true}]}", 1, NULL, 0},
    {"{\"metadata\": {\"actor\": [{\"exists\": true}]}}", 1, NULL, 0},
    {"{\"metadata\": {\"actor\": [{\"exists\": false}]}}", 1, NULL, F_NOMETA},
    {"{\"data\": {\"missing\": [\"x\", {\"exists\": false}]}}", 1, NULL, 0},
    {"{\"data\": {\"currency\": [\"x\", {\"exists\": false}]}}", 0, NULL, 0},
    /* data that is not JSON is absent */
    {"{\"data\": {\"currency\": [{\"exists\": false}]}}", 1, NULL, F_RAWDATA},
    {"{\"data\": {\"currency\": [\"EUR\"]}}", 0, NULL, F_RAWDATA},
    {"{\"data\": [{\"exists\": false}]}", 1, NULL, F_RAWDATA},
    /* data flagged JSON that does not parse is absent too */
    {"{\"data\": {\"a\": [{\"exists\": false}]}}", 1, "{\"a\": 1", 0},
    {"{\"data\": {\"a\": [1]}}", 0, "{\"a\": 1} {\"a\": 1}", 0},
    /* ---- cidr */
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.0.0/24\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.1.0/24\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.0.0/8\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.0.32/31\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.0.34/31\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.0.33/32\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"0.0.0.0/0\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"10.0.0.77/24\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip6\": [{\"cidr\": \"2001:db8::/32\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip6\": [{\"cidr\": \"2001:db9::/32\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"ip6\": [{\"cidr\": \"2001:db8::1/128\"}]}}", 1, NULL, 0},
    {"{\"data\": {\"ip6\": [{\"cidr\": \"10.0.0.0/8\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"ip\": [{\"cidr\": \"::/0\"}]}}", 0, NULL, 0},
    {"{\"data\": {\"currency\": [{\"cidr\": \"0.0.0.0/0\"}]}}", 0, NULL, 0},
    /* ---- $or */
    {"{\"$or\": [{\"type\": [\"X\"]}, {\"data\": {\"currency\": [\"EUR\"]}}]}", 1, NULL, 0},
    {"{\"$or\": [{\"type\": [\"X\"]}, {\"data\": {\"currency\": [\"USD\"]}}]}", 0, NULL, 0},
    {"{\"data\": {\"$or\": [{\"currency\": [\"USD\"]}, {\"count\": [{\"numeric\": [\">\", 2]}]}]}}",
     1, NULL, 0},
    {"{\"type\": [\"OrderPlaced\"], \"$or\": [{\"tags\": [\"x\"]}, {\"stream\": [\"y\"]}]}", 0, NULL,
     0},
    {"{\"type\": [\"OrderPlaced\"], \"$or\": [{\"tags\": [\"x\"]}, {\"stream\": [\"Order-123\"], "
     "\"$or\": [{\"revision\": [9]}, {\"data\": {\"coupon\": [null]}}]}]}",
     1, NULL, 0},
    {"{\"$or\": [{\"type\": [\"X\"]}, {\"type\": [\"Y\"]}], \"data\": {\"$or\": [{\"count\": [3]}, "
     "{\"note\": [\"\"]}]}}",
     0, NULL, 0},
    /* ---- metadata */
    {"{\"metadata\": {\"correlationId\": [\"c-1\"]}}", 1, NULL, 0},
    {"{\"metadata\": {\"correlationId\": [\"c-1\"]}}", 0, NULL, F_NOMETA},
    {"{\"metadata\": {\"actor\": [{\"prefix\": \"b\"}]}, \"data\": {\"currency\": [\"EUR\"]}}", 1,
     NULL, 0},
};

/* Malformed patterns: the error code and the exact message. */
typedef struct bad {
    const char *pattern;
    int code;
    const char *msg;
} bad;

static const bad B[] = {
    {"", STELE_EINVAL, "pattern: expected a JSON object"},
    {"[]", STELE_EINVAL, "pattern: expected a JSON object"},
    {"\"x\"", STELE_EINVAL, "pattern: expected a JSON object"},
    {"{}", STELE_EINVAL, "pattern: expected at least one field (empty objects match nothing)"},
    {"{\"type\": \"x\"}", STELE_EINVAL,
     "type: expected a list of values (such as [\"x\"]) or an object"},
    {"{\"type\": []}", STELE_EINVAL, "type: expected at least one value or operator in the list"},
    {"{\"type\": [[\"a\"]]}", STELE_EINVAL, "type: a list of values may not contain a list"},
    {"{\"source\": [\"x\"]}", STELE_EINVAL,
     "source: unknown event field (expected id, stream, category, type, revision, position, "
     "created, tags, data, metadata or $or)"},
    {"{\"type\": {\"a\": [\"x\"]}}", STELE_EINVAL,
     "type: has no fields below it: expected a list of values"},
    {"{\"data\": {}}", STELE_EINVAL,
     "data: expected at least one field (empty objects match nothing)"},
    {"{\"type\": [\"a\"], \"type\": [\"b\"]}", STELE_EINVAL, "type: the key is given twice"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\"]}]}}", STELE_EINVAL,
     "data.amount: numeric: expected an operator and a number"},
    {"{\"data\": {\"amount\": [{\"numeric\": []}]}}", STELE_EINVAL,
     "data.amount: numeric: expected an operator and a number"},
    {"{\"data\": {\"amount\": [{\"numeric\": 5}]}}", STELE_EINVAL,
     "data.amount: numeric: expected a list such as [\">\", 0, \"<=\", 5]"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", \"5\"]}]}}", STELE_EINVAL,
     "data.amount: numeric: expected a number after \">\""},
    {"{\"data\": {\"amount\": [{\"numeric\": [\"=>\", 5]}]}}", STELE_EINVAL,
     "data.amount: numeric: unknown comparison \"=>\" (expected =, <, <=, >, >=)"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", 5, \"<\", 1]}]}}", STELE_EINVAL,
     "data.amount: numeric: the range is empty (the lower bound must be below the upper bound)"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\"<\", 5, \">\", 1]}]}}", STELE_EINVAL,
     "data.amount: numeric: expected a lower bound (> or >=) before an upper bound (< or <=)"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\"=\", 1, \"<\", 2]}]}}", STELE_EINVAL,
     "data.amount: numeric: \"=\" cannot be combined with another comparison"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", 1, \"<\"]}]}}", STELE_EINVAL,
     "data.amount: numeric: expected an operator and a number"},
    {"{\"data\": {\"amount\": [{\"numeric\": [\">\", 1, \"<\", 2, \"<\", 3, \"<\", 4]}]}}",
     STELE_EINVAL,
     "data.amount: numeric: at most two comparisons (a lower and an upper bound)"},
    {"{\"data\": {\"x\": [{\"foo\": 1}]}}", STELE_EINVAL,
     "data.x: unknown operator \"foo\" (expected prefix, suffix, equals-ignore-case, wildcard, "
     "anything-but, numeric, exists or cidr)"},
    {"{\"data\": {\"x\": [{\"contains\": \"a\"}]}}", STELE_EINVAL,
     "data.x: unknown operator \"contains\" (expected prefix, suffix, equals-ignore-case, wildcard, "
     "anything-but, numeric, exists or cidr)"},
    {"{\"data\": {\"x\": [{}]}}", STELE_EINVAL,
     "data.x: expected exactly one operator in {...}, found 0"},
    {"{\"data\": {\"x\": [{\"prefix\": \"a\", \"suffix\": \"b\"}]}}", STELE_EINVAL,
     "data.x: expected exactly one operator in {...}, found 2"},
    {"{\"data\": {\"x\": [{\"prefix\": 1}]}}", STELE_EINVAL, "data.x: prefix: expected a string"},
    {"{\"data\": {\"x\": [{\"prefix\": {\"equals-ignore-case\": 1}}]}}", STELE_EINVAL,
     "data.x: prefix: equals-ignore-case: expected a string"},
    {"{\"data\": {\"x\": [{\"suffix\": {\"ignore-case\": \"a\"}}]}}", STELE_EINVAL,
     "data.x: suffix: expected a string or {\"equals-ignore-case\": string}"},
    {"{\"data\": {\"x\": [{\"equals-ignore-case\": [\"a\"]}]}}", STELE_EINVAL,
     "data.x: equals-ignore-case: expected a string"},
    {"{\"data\": {\"x\": [{\"wildcard\": \"a**b\"}]}}", STELE_EINVAL,
     "data.x: wildcard: consecutive '*' are not allowed"},
    {"{\"data\": {\"x\": [{\"wildcard\": \"a\\\\b\"}]}}", STELE_EINVAL,
     "data.x: wildcard: a backslash may only escape '*' or '\\'"},
    {"{\"data\": {\"x\": [{\"wildcard\": \"ab\\\\\"}]}}", STELE_EINVAL,
     "data.x: wildcard: a backslash may only escape '*' or '\\'"},
    {"{\"data\": {\"x\": [{\"anything-but\": []}]}}", STELE_EINVAL,
     "data.x: anything-but: expected a non-empty list"},
    {"{\"data\": {\"x\": [{\"anything-but\": [1, \"a\"]}]}}", STELE_EINVAL,
     "data.x: anything-but: a list must hold only strings or only numbers"},
    {"{\"data\": {\"x\": [{\"anything-but\": [\"a\", 1]}]}}", STELE_EINVAL,
     "data.x: anything-but: expected a string or a list of strings"},
    {"{\"data\": {\"x\": [{\"anything-but\": true}]}}", STELE_EINVAL,
     "data.x: anything-but: expected a string, a number, a list of strings or of numbers, or an "
     "object with prefix, suffix, equals-ignore-case or wildcard"},
    {"{\"data\": {\"x\": [{\"anything-but\": {\"contains\": \"a\"}}]}}", STELE_EINVAL,
     "data.x: anything-but: unknown operator \"contains\" (expected prefix, suffix, "
     "equals-ignore-case or wildcard)"},
    {"{\"data\": {\"x\": [{\"anything-but\": {\"prefix\": []}}]}}", STELE_EINVAL,
     "data.x: anything-but: prefix: expected a non-empty list of strings"},
    {"{\"data\": {\"x\": [{\"anything-but\": {\"wildcard\": \"a**\"}}]}}", STELE_EINVAL,
     "data.x: anything-but: wildcard: consecutive '*' are not allowed"},
    {"{\"data\": {\"x\": [{\"exists\": \"yes\"}]}}", STELE_EINVAL,
     "data.x: exists: expected true or false"},
    {"{\"data\": {\"x\": [{\"cidr\": \"10.0.0.0\"}]}}", STELE_EINVAL,
     "data.x: cidr: expected an address, '/' and a prefix length"},
    {"{\"data\": {\"x\": [{\"cidr\": \"10.0.0.0/33\"}]}}", STELE_EINVAL,
     "data.x: cidr: prefix length 33 is over 32"},
    {"{\"data\": {\"x\": [{\"cidr\": \"2001:db8::/129\"}]}}", STELE_EINVAL,
     "data.x: cidr: prefix length 129 is over 128"},
    {"{\"data\": {\"x\": [{\"cidr\": \"10.0.0/8\"}]}}", STELE_EINVAL,
     "data.x: cidr: \"10.0.0\" is not an IPv4 or IPv6 address"},
    {"{\"data\": {\"x\": [{\"cidr\": \"10.0.0.0/x\"}]}}", STELE_EINVAL,
     "data.x: cidr: bad prefix length"},
    {"{\"data\": {\"x\": [{\"cidr\": 10}]}}", STELE_EINVAL,
     "data.x: cidr: expected a string such as \"10.0.0.0/24\" or \"2001:db8::/32\""},
    {"{\"$or\": [{\"type\": [\"a\"]}]}", STELE_EINVAL,
     "$or: expected a list of at least two patterns"},
    {"{\"$or\": {\"type\": [\"a\"]}}", STELE_EINVAL,
     "$or: expected a list of at least two patterns"},
    {"{\"$or\": [{\"type\": [\"a\"]}, {\"foo\": [\"b\"]}]}", STELE_EINVAL,
     "$or[1].foo: unknown event field (expected id, stream, category, type, revision, position, "
     "created, tags, data, metadata or $or)"},
    {"{\"$or\": [{\"type\": [\"a\"]}, 5]}", STELE_EINVAL, "$or[1]: expected a pattern (an object)"},
    {"{\"data\": {\"$or\": [{\"a\": [1]}, {\"b\": [{\"numeric\": [\">\"]}]}]}}", STELE_EINVAL,
     "data.$or[1].b: numeric: expected an operator and a number"},
    /* not JSON */
    {"{\"type\": [\"a\",]}", STELE_EINVAL, "pattern: invalid JSON: unexpected text at byte 13"},
    {"{\"type\" [\"a\"]}", STELE_EINVAL, NULL},
    {"{\"type\": [\"a\" \"b\"]}", STELE_EINVAL, "pattern: invalid JSON: expected ',' at byte 14"},
    {"{\"type\": [\"a\"]} x", STELE_EINVAL, NULL},
    {"{\"type\": [\"a\"]}{}", STELE_EINVAL, NULL},
    {"{\"type\": [\"a\x01\"]}", STELE_EINVAL,
     "pattern: invalid JSON: control character in a string at byte 12"},
    {"{\"type\": [\"a\\q\"]}", STELE_EINVAL, "pattern: invalid JSON at byte 10"},
    {"{\"type\": [\"\\ud800\"]}", STELE_EINVAL,
     "pattern: invalid JSON: unpaired surrogate at byte 11"},
    {"{\"type\": [\"\\u0000\"]}", STELE_EINVAL, "pattern: strings may not contain U+0000"},
    {"{\"type\": [\"\xff\"]}", STELE_EINVAL, "pattern: invalid JSON: malformed UTF-8 at byte 11"},
    {"{\"revision\": [01]}", STELE_EINVAL, "pattern: invalid JSON: bad value '01' at byte 14"},
    {"{\"revision\": [1.]}", STELE_EINVAL, "pattern: invalid JSON: bad value '1.' at byte 14"},
    {"{\"revision\": [tru]}", STELE_EINVAL, NULL},
    {"{\"revision\": [1e99999]}", STELE_EINVAL, "revision: number 1e99999 is out of range"},
    {"{\"type\": [\"a\"]", STELE_EINVAL, "pattern: invalid JSON: the text ends too early"},
};

static int g_passed;

static stele_event make_event(const char *data, int flags)
{
    static const char *const tags[] = {"vip", "eu"};
    static const uint8_t id[16] = {0x01, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0x7e, 0x5f,
                                   0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b};
    stele_event e;
    memset(&e, 0, sizeof e);
    memcpy(e.id, id, 16);
    e.stream = "Order-123";
    e.stream_len = strlen(e.stream);
    e.type = "OrderPlaced";
    e.type_len = strlen(e.type);
    e.data = data;
    e.data_len = strlen(data);
    e.flags = (flags & F_RAWDATA ? 0 : STELE_EVENT_JSON);
    if (!(flags & F_NOMETA)) {
        e.metadata = EV_META;
        e.metadata_len = strlen(EV_META);
        e.flags |= STELE_META_JSON;
    }
    if (!(flags & F_NOTAGS)) {
        e.tags = tags;
        e.ntags = 2;
    }
    CHECK_OK(stele_time_parse("2026-12-06T10:20:30.123456Z", 0, &e.created_us));
    e.revision = 5;
    e.position = 1234;
    return e;
}

static void test_golden(void)
{
    for (size_t i = 0; i < sizeof G / sizeof G[0]; i++) {
        const golden *g = &G[i];
        char err[512];
        pattern *p = NULL;
        int rc = pattern_compile(g->pattern, strlen(g->pattern), &p, err, sizeof err);
        if (rc) {
            fprintf(stderr, "golden %zu: %s: compile failed: %s\n", i, g->pattern, err);
            CHECK(rc == 0);
            continue;
        }
        stele_event e = make_event(g->data ? g->data : EV_DATA, g->flags);
        pattern_input *in;
        CHECK_OK(pattern_input_new(&e, &in));
        int got = pattern_match(p, in);
        /* A second match on the same input uses what the first cached. */
        int again = pattern_match(p, in);
        if (got != g->want || again != g->want) {
            fprintf(stderr, "golden %zu: %s: got %d then %d, want %d\n", i, g->pattern, got, again,
                    g->want);
            CHECK(got == g->want);
        }
        pattern_input_free(in);
        pattern_free(p);
        g_passed++;
    }
}

static void test_bad(void)
{
    for (size_t i = 0; i < sizeof B / sizeof B[0]; i++) {
        const bad *b = &B[i];
        char err[512];
        pattern *p = (pattern *)1;
        int rc = pattern_compile(b->pattern, strlen(b->pattern), &p, err, sizeof err);
        if (rc != b->code || p != NULL || (b->msg && strcmp(err, b->msg)) || !err[0]) {
            fprintf(stderr, "bad %zu: %s\n  got %d \"%s\"\n want %d \"%s\"\n", i, b->pattern, rc, err,
                    b->code, b->msg ? b->msg : "(any message)");
            CHECK(0);
        }
        if (rc == 0)
            pattern_free(p);
        g_passed++;
    }
}

/* Size, nesting and $or limits, at and over the limit. */
static void test_limits(void)
{
    char err[512];
    pattern *p;
    size_t cap = PATTERN_MAX_BYTES + 64;
    char *s = malloc(cap);
    CHECK(s != NULL);
    /* Exactly the limit: {"type":["xxxx..."]} padded to PATTERN_MAX_BYTES. */
    const char *head = "{\"type\":[\"", *tail = "\"]}";
    size_t fill = PATTERN_MAX_BYTES - strlen(head) - strlen(tail);
    memcpy(s, head, strlen(head));
    memset(s + strlen(head), 'x', fill);
    memcpy(s + strlen(head) + fill, tail, strlen(tail));
    CHECK_OK(pattern_compile(s, PATTERN_MAX_BYTES, &p, err, sizeof err));
    pattern_free(p);
    /* One byte over. */
    memmove(s + strlen(head) + fill + 1, s + strlen(head) + fill, strlen(tail));
    s[strlen(head) + fill] = 'x';
    CHECK_RC(pattern_compile(s, PATTERN_MAX_BYTES + 1, &p, err, sizeof err), STELE_ETOOBIG);
    CHECK(!strcmp(err, "pattern: is 4097 bytes, over the limit of 4096"));
    /* Nesting: the root and 31 objects below it is fine, 32 is not. */
    for (int levels = 31; levels <= 32; levels++) {
        size_t o = 0;
        o += (size_t)sprintf(s + o, "{\"data\":");
        for (int k = 0; k < levels; k++)
            o += (size_t)sprintf(s + o, "{\"k\":");
        o += (size_t)sprintf(s + o, "[1]");
        for (int k = 0; k < levels + 1; k++)
            s[o++] = '}';
        int rc = pattern_compile(s, o, &p, err, sizeof err);
        if (levels == 31) {
            CHECK_OK(rc);
            pattern_free(p);
        } else {
            CHECK(rc == STELE_EINVAL);
            CHECK(strstr(err, ": nested more than 32 levels deep") != NULL);
            CHECK(!strncmp(err, "data.k.k.k.", 11));
        }
    }
    /* Deep JSON of any kind is refused before it is walked. */
    {
        size_t o = 0;
        o += (size_t)sprintf(s + o, "{\"data\": {\"x\": ");
        for (int k = 0; k < 1000; k++)
            s[o++] = '[';
        for (int k = 0; k < 1000; k++)
            s[o++] = ']';
        o += (size_t)sprintf(s + o, "}}");
        CHECK(pattern_compile(s, o, &p, err, sizeof err) == STELE_EINVAL);
        CHECK(!strcmp(err, "pattern: nested more than 32 levels deep"));
    }
    /* $or combinations: 10 x 10 x 10 = 1000 is allowed, 6^4 = 1296 is not. */
    for (int over = 0; over <= 1; over++) {
        int nor = over ? 4 : 3, nalt = over ? 6 : 10;
        size_t o = 0;
        o += (size_t)sprintf(s + o, "{\"data\":{");
        for (int k = 0; k < nor; k++) {
            o += (size_t)sprintf(s + o, "%s\"f%d\":{\"$or\":[", k ? "," : "", k);
            for (int a = 0; a < nalt; a++)
                o += (size_t)sprintf(s + o, "%s{\"a%d\":[%d]}", a ? "," : "", a, a);
            o += (size_t)sprintf(s + o, "]}");
        }
        o += (size_t)sprintf(s + o, "}}");
        int rc = pattern_compile(s, o, &p, err, sizeof err);
        if (!over) {
            CHECK_OK(rc);
            pattern_free(p);
        } else {
            CHECK(rc == STELE_EINVAL);
            CHECK(!strcmp(err, "pattern: $or expands to more than 1000 combinations"));
        }
    }
    /* Event data nested deeper than PATTERN_EVENT_MAX_DEPTH is not seen;
     * shallower values beside it still are. */
    {
        size_t o = 0;
        o += (size_t)sprintf(s + o, "{\"top\": 1, \"d\": ");
        for (int k = 0; k < PATTERN_EVENT_MAX_DEPTH + 10; k++)
            s[o++] = '[';
        s[o++] = '7';
        for (int k = 0; k < PATTERN_EVENT_MAX_DEPTH + 10; k++)
            s[o++] = ']';
        o += (size_t)sprintf(s + o, ", \"after\": 2}");
        s[o] = 0;
        stele_event e = make_event(s, 0);
        pattern_input *in;
        CHECK_OK(pattern_input_new(&e, &in));
        const char *pats[] = {"{\"data\": {\"top\": [1], \"after\": [2]}}",
                              "{\"data\": {\"d\": [{\"exists\": false}]}}"};
        for (int k = 0; k < 2; k++) {
            CHECK_OK(pattern_compile(pats[k], strlen(pats[k]), &p, err, sizeof err));
            CHECK(pattern_match(p, in) == 1);
            pattern_free(p);
        }
        pattern_input_free(in);
    }
    free(s);
    g_passed++;
}

/* One input shared by many patterns, and reset onto other events. */
static void test_input_reuse(void)
{
    char err[256];
    pattern *p1, *p2;
    const char *a = "{\"data\": {\"n\": [{\"numeric\": [\">\", 5]}]}}";
    const char *b = "{\"metadata\": {\"m\": [{\"equals-ignore-case\": \"X\"}]}}";
    CHECK_OK(pattern_compile(a, strlen(a), &p1, err, sizeof err));
    CHECK_OK(pattern_compile(b, strlen(b), &p2, err, sizeof err));
    pattern_input *in = NULL;
    char data[128], meta[64];
    for (int i = 0; i < 200; i++) {
        snprintf(data, sizeof data, "{\"n\": %d, \"pad\": \"%0*d\"}", i % 10, i % 50, 0);
        snprintf(meta, sizeof meta, "{\"m\": \"%s\"}", i % 3 ? "x" : "y");
        stele_event e = make_event(data, 0);
        e.metadata = meta;
        e.metadata_len = strlen(meta);
        if (!in)
            CHECK_OK(pattern_input_new(&e, &in));
        else
            pattern_input_reset(in, &e);
        CHECK(pattern_match(p1, in) == (i % 10 > 5));
        CHECK(pattern_match(p2, in) == (i % 3 != 0));
    }
    pattern_input_free(in);
    pattern_free(p1);
    pattern_free(p2);
    g_passed++;
}

int main(void)
{
    test_golden();
    test_bad();
    test_limits();
    test_input_reuse();
    return t_done("test_pattern", g_passed);
}
