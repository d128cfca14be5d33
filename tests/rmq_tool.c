/*
 * rmq_tool.c - a small AMQP client for the rabbitmq target's test
 * (tests/http/test_http_rules_rabbitmq.py), with librabbitmq:
 *
 *   rmq_tool PORT declare EXCHANGE QUEUE BINDING   a durable topic exchange,
 *                                                  a durable queue, bound
 *   rmq_tool PORT drain QUEUE                      print "message-id type
 *                                                  delivery-mode" per message
 *                                                  (basic.get until empty)
 *   rmq_tool PORT consume QUEUE N                  subscribe (basic.consume),
 *                                                  print "ready", then per
 *                                                  message as it arrives
 *                                                  "RECEIVE_NS BODY" (receive
 *                                                  time, CLOCK_REALTIME ns,
 *                                                  taken when the message is
 *                                                  read), until N messages
 *
 * guest/guest on 127.0.0.1. Exit 0, or 1 with the error on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

static int check(amqp_rpc_reply_t x, const char *what)
{
    if (x.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    fprintf(stderr, "rmq_tool: %s failed (%d)\n", what, (int)x.reply_type);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: rmq_tool PORT declare EXCHANGE QUEUE BINDING | PORT drain QUEUE | PORT consume QUEUE N\n");
        return 1;
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", atoi(argv[1])) != AMQP_STATUS_OK) {
        fprintf(stderr, "rmq_tool: cannot connect\n");
        return 1;
    }
    if (check(amqp_login(c, "/", 1, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login"))
        return 1;
    amqp_channel_open(c, 1);
    if (check(amqp_get_rpc_reply(c), "channel"))
        return 1;
    if (!strcmp(argv[2], "declare") && argc == 6) {
        amqp_exchange_declare(c, 1, amqp_cstring_bytes(argv[3]), amqp_cstring_bytes("topic"), 0, 1,
                              0, 0, amqp_empty_table);
        if (check(amqp_get_rpc_reply(c), "exchange.declare"))
            return 1;
        amqp_queue_declare(c, 1, amqp_cstring_bytes(argv[4]), 0, 1, 0, 0, amqp_empty_table);
        if (check(amqp_get_rpc_reply(c), "queue.declare"))
            return 1;
        amqp_queue_bind(c, 1, amqp_cstring_bytes(argv[4]), amqp_cstring_bytes(argv[3]),
                        amqp_cstring_bytes(argv[5]), amqp_empty_table);
        if (check(amqp_get_rpc_reply(c), "queue.bind"))
            return 1;
    } else if (!strcmp(argv[2], "drain")) {
        for (;;) {
            amqp_rpc_reply_t x = amqp_basic_get(c, 1, amqp_cstring_bytes(argv[3]), 1);
            if (check(x, "basic.get"))
                return 1;
            if (x.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
                break;
            amqp_message_t m;
            if (check(amqp_read_message(c, 1, &m, 0), "read"))
                return 1;
            printf("%.*s %.*s %u\n", (int)m.properties.message_id.len,
                   (const char *)m.properties.message_id.bytes, (int)m.properties.type.len,
                   (const char *)m.properties.type.bytes, m.properties.delivery_mode);
            amqp_destroy_message(&m);
            amqp_maybe_release_buffers(c);
        }
    } else if (!strcmp(argv[2], "consume") && argc == 5) {
        long n = atol(argv[4]);
        amqp_basic_consume(c, 1, amqp_cstring_bytes(argv[3]), amqp_empty_bytes, 0, 1, 0,
                           amqp_empty_table);
        if (check(amqp_get_rpc_reply(c), "basic.consume"))
            return 1;
        printf("ready\n");
        fflush(stdout);
        for (long i = 0; i < n; i++) {
            amqp_envelope_t env;
            amqp_maybe_release_buffers(c);
            if (check(amqp_consume_message(c, &env, NULL, 0), "consume"))
                return 1;
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            printf("%lld %.*s\n", (long long)now.tv_sec * 1000000000LL + now.tv_nsec,
                   (int)env.message.body.len, (const char *)env.message.body.bytes);
            amqp_destroy_envelope(&env);
        }
        fflush(stdout);
    } else {
        fprintf(stderr, "rmq_tool: unknown command\n");
        return 1;
    }
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return 0;
}
