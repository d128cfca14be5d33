"""
rules_common.py - what the broker and database target suites
(test_http_rules_nats.py, _rabbitmq.py, _pg.py) check the same way.

  - waiting "until, or fail after a generous deadline" (no timing
    assertions);
  - a set of rules whose targets must fail: each is retried, dead-lettered
    with the target's own error text and the attempt count, no secret in the
    reason or the server's log, and the server stays up.
"""
import json
import time


def wait_for(T, cond, what, timeout=180, dump=None):
    """cond()'s first true value, polled every 100 ms; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    T.fail("timed out waiting for " + what, None, None, dump() if dump else None)


def dead_letters_carry_text(T, req, srv, rules, secrets, data=None):
    """rules: name -> (target, text the dead letter's reason must contain).
    Each rule takes one "Probe" event, allows 3 attempts, and must end with
    one dead letter whose reason has `text` and none of `secrets`."""
    retry = {"maxAttempts": 3, "backoffMs": 10, "maxBackoffMs": 50}
    for name, (target, _) in rules.items():
        T.expect(req("PUT", "/rules/" + name, json.dumps(
            {"pattern": {"type": ["Probe"]}, "target": target, "retry": retry})), 201)
    T.expect(req("POST", "/streams/Probe-1",
                 json.dumps([{"type": "Probe", "data": data or {}}])), 201)
    for name, (_, text) in rules.items():
        wait_for(T, lambda: T.expect(req("GET", "/rules/" + name),
                                     200)["stats"]["deadLetters"] == 1,
                 "a dead letter for " + name, timeout=120,
                 dump=lambda: req("GET", "/rules/" + name).body)
        reason = T.expect(req("GET", "/rules/%s/dead-letters" % name),
                          200)["deadLetters"][0]["deadLettered"]["reason"]
        T.check(text in reason and "3 attempts" in reason,
                "dead letter carries the target's error (%s)" % name, None, text, reason)
        T.check(not any(s in reason for s in secrets), "no secret in the reason (%s)" % name,
                None, None, reason)
    T.check(srv.alive(), "the server is still up")
    log = open(srv.log_path, errors="replace").read()
    T.check(not any(s in log for s in secrets), "no secret in the log")
