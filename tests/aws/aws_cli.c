/*
 * aws_cli.c - one signed AWS JSON-protocol call from the command line, for
 * the tests/aws scripts (create tables, scan them) through Stele's own
 * client (src/rules/aws_http.c) and the environment's test credentials:
 *   aws_cli dynamodb|kinesis ENDPOINT DynamoDB_20120810.Scan '{"TableName": "T"}'
 * Prints the answer's body; exit 0 on 2xx, 1 on an error answer (its type
 * and message on stderr), 2 on a transport or usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/aws_http.h"
#include "stele.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: aws_cli SERVICE ENDPOINT TARGET BODY\n");
        return 2;
    }
    aws_creds c;
    if (aws_creds_load(NULL, NULL, &c)) {
        fprintf(stderr, "%s\n", stele_errmsg());
        return 2;
    }
    const char *region = getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1";
    const char *ct = strcmp(argv[1], "kinesis") ? "application/x-amz-json-1.0" : "application/x-amz-json-1.1";
    aws_client *a = NULL;
    if (aws_client_new(argv[2], region, argv[1], ct, &c, 30000, &a)) {
        fprintf(stderr, "%s\n", stele_errmsg());
        return 2;
    }
    aws_resp r;
    int rc = aws_call(a, argv[3], argv[4], strlen(argv[4]), &r);
    int code = 0;
    if (rc) {
        fprintf(stderr, "transport: %s\n", r.message);
        code = 2;
    } else {
        fwrite(r.body.p ? (const char *)r.body.p : "", 1, r.body.len, stdout);
        printf("\n");
        if (r.status < 200 || r.status > 299) {
            fprintf(stderr, "%ld %s: %s\n", r.status, r.type, r.message);
            code = 1;
        }
    }
    aws_resp_free(&r);
    aws_client_free(a);
    aws_creds_clear(&c);
    return code;
}
