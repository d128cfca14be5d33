/*
 * prelude.js - KurrentDB's projection API (fromAll, when, partitionBy,
 * emit ...) in ES5, run in each projection's duktape heap before the
 * user's query (src/proj/js.c embeds it at build time).
 *
 * The query only describes the projection: its source (fromAll,
 * fromCategory ...), its handlers and its options are recorded in `def`.
 * The runner (src/proj/run.c) then calls __stele_on() once per event.
 * Partition states live in `states` (an object with no prototype, keyed by
 * partition) as a cache: a partition not in it is loaded from the store
 * through the native __stele_load(key, shared), and the runner evicts
 * clean partitions (js.c deletes them from hot.states and hot.statePos,
 * and records committed positions in hot.statePos, without calls into
 * JavaScript). Partitions whose handlers ran
 * since the last commit are listed in `dirty`; the runner takes them with
 * __stele_take_dirty() and serialises each with __stele_state_json().
 *
 * Natives provided by js.c: __stele_load(key, shared) -> null or
 * [json, position]; __stele_emit(stream, type, data, metadata, isJson,
 * metaIsJson); __stele_log(text); __stele_raw(which, n) -> the data (0)
 * or metadata (1) of event number n while its handler runs;
 * __stele_body(n) -> that data parsed, or null to leave it to JSON.parse.
 */
var __stele = (function (global) {
    'use strict';
    var def = {
        all: false, categories: [], streams: [], handlers: {}, partitionBy: null,
        foreachStream: false, outputState: false, resultStream: null, matching: null,
        transforms: [], options: {}, defined: false
    };
    var states = Object.create(null);
    var statePos = Object.create(null);
    var dirty = [];
    var dirtyMark = Object.create(null);
    var shared;            /* bi-state: the shared state, undefined until loaded */
    var sharedLoaded = false, sharedDirty = false, sharedPos = -1;
    var foldState;

    function fail(msg) { throw new Error(msg); }

    function argList(args) {
        if (args.length === 1 && Object.prototype.toString.call(args[0]) === '[object Array]')
            return args[0].slice();
        return Array.prototype.slice.call(args);
    }
    function strings(list, what) {
        for (var i = 0; i < list.length; i++)
            if (typeof list[i] !== 'string' || list[i] === '')
                fail(what + ' expects non-empty strings');
        return list;
    }
    function setSource(f) {
        if (def.defined) fail('the query selects its source twice (one from... call per query)');
        def.defined = true;
        f();
    }

    /* The object every step of the chain returns: each call records its part. */
    var chain = {
        when: function (handlers) {
            if (typeof handlers !== 'object' || handlers === null) fail('when() expects an object of handlers');
            for (var k in handlers) {
                if (!Object.prototype.hasOwnProperty.call(handlers, k)) continue;
                if (typeof handlers[k] !== 'function') fail('when(): handler ' + k + ' is not a function');
                def.handlers[k] = handlers[k];
            }
            return chain;
        },
        partitionBy: function (f) {
            if (typeof f !== 'function') fail('partitionBy() expects a function');
            if (def.foreachStream) fail('partitionBy() and foreachStream() exclude each other');
            def.partitionBy = f;
            return chain;
        },
        foreachStream: function () {
            if (def.partitionBy) fail('partitionBy() and foreachStream() exclude each other');
            def.foreachStream = true;
            return chain;
        },
        outputState: function () { def.outputState = true; return chain; },
        outputTo: function (name) {
            if (typeof name !== 'string' || name === '') fail('outputTo() expects a stream name');
            def.resultStream = name;
            def.outputState = true;
            return chain;
        },
        transformBy: function (f) {
            if (typeof f !== 'function') fail('transformBy() expects a function');
            def.transforms.push({ kind: 't', f: f });
            return chain;
        },
        filterBy: function (f) {
            if (typeof f !== 'function') fail('filterBy() expects a function');
            def.transforms.push({ kind: 'f', f: f });
            return chain;
        }
    };

    global.fromAll = function () { setSource(function () { def.all = true; }); return chain; };
    global.fromCategory = function (c) {
        setSource(function () { def.categories = strings([c], 'fromCategory()'); });
        return chain;
    };
    global.fromCategories = function () {
        var l = strings(argList(arguments), 'fromCategories()');
        setSource(function () { def.categories = l; });
        return chain;
    };
    /* Stream names; the views $ce-C and $et-T are read where their events
     * are (Stele keeps no link streams), $bc- and $streams are refused. */
    function streamNames(l, what) {
        strings(l, what);
        for (var i = 0; i < l.length; i++)
            if (l[i].indexOf('$bc-') === 0 || l[i] === '$streams')
                fail(what + ': ' + l[i] + ' is not a projection source in Stele; use fromAll() ' +
                     '(and e.metadata.$correlationId for $bc-)');
        return l;
    }
    global.fromStream = function (s) {
        setSource(function () { def.streams = streamNames([s], 'fromStream()'); });
        return chain;
    };
    global.fromStreams = function () {
        var l = streamNames(argList(arguments), 'fromStreams()');
        setSource(function () { def.streams = l; });
        return chain;
    };
    /* Every stream that is not a system stream (as fromAll), kept when
     * the predicate answers true for its name. */
    global.fromStreamsMatching = function (f) {
        if (typeof f !== 'function') fail('fromStreamsMatching() expects a function of the stream name');
        setSource(function () { def.all = true; def.matching = f; });
        return chain;
    };
    /* KurrentDB's options, each checked here; docs/projections.md says
     * what each does in Stele. */
    var optionCheck = {
        resultStreamName: function (v) {
            if (typeof v !== 'string' || v === '') return 'a non-empty string';
            def.resultStream = v;
        },
        $includeLinks: function (v) { if (typeof v !== 'boolean') return 'true or false'; },
        reorderEvents: function (v) { if (typeof v !== 'boolean') return 'true or false'; },
        processingLag: function (v) {
            if (typeof v !== 'number' || !(v >= 0) || v > 3600000) return 'a number of milliseconds from 0 to 3600000';
        },
        biState: function (v) { if (typeof v !== 'boolean') return 'true or false'; }
    };
    global.options = function (o) {
        if (typeof o !== 'object' || o === null) fail('options() expects an object');
        for (var k in o) {
            if (!Object.prototype.hasOwnProperty.call(o, k)) continue;
            if (!Object.prototype.hasOwnProperty.call(optionCheck, k))
                fail('options(): unknown option ' + JSON.stringify(k) + ' (known: resultStreamName, ' +
                     '$includeLinks, reorderEvents, processingLag, biState)');
            var why = optionCheck[k](o[k]);
            if (why) fail('options(): ' + k + ' must be ' + why);
            def.options[k] = o[k];
        }
    };
    function biState() {
        return def.handlers.$initShared !== undefined || def.options.biState === true;
    }

    function json(v) {
        if (v === undefined) return null;
        if (typeof v === 'string') return v;
        return JSON.stringify(v);
    }
    function requireEvent() {
        if (hot === null || hot.cur === null) fail('emit, linkTo and copyTo may only be called from a handler');
        return !hot.folding;
    }
    global.emit = function (stream, type, body, metadata) {
        if (!requireEvent()) return;
        if (typeof stream !== 'string' || stream === '') fail('emit(): the stream name must be a non-empty string');
        if (typeof type !== 'string' || type === '') fail('emit(): the event type must be a non-empty string');
        var data = body === undefined ? '{}' : json(body);
        __stele_emit(stream, type, data, metadata === undefined || metadata === null ? null : json(metadata),
                     typeof body !== 'string', typeof metadata !== 'string');
    };
    global.linkTo = function (stream, ev, metadata) {
        if (!requireEvent()) return;
        if (typeof stream !== 'string' || stream === '') fail('linkTo(): the stream name must be a non-empty string');
        if (!ev || typeof ev.streamId !== 'string') fail('linkTo(): the second argument must be an event');
        __stele_emit(stream, '$>', ev.sequenceNumber + '@' + ev.streamId,
                     metadata === undefined || metadata === null ? null : json(metadata), false,
                     typeof metadata !== 'string');
    };
    global.copyTo = function (stream, ev, metadata) {
        if (!requireEvent()) return;
        if (typeof stream !== 'string' || stream === '') fail('copyTo(): the stream name must be a non-empty string');
        if (!ev || typeof ev.eventType !== 'string') fail('copyTo(): the second argument must be an event');
        __stele_emit(stream, ev.eventType, ev.bodyRaw,
                     metadata === undefined || metadata === null ? ev.metadataRaw || null : json(metadata),
                     ev.isJson, true);
    };
    global.linkStreamTo = function (stream, linked, metadata) {
        if (!requireEvent()) return;
        __stele_emit(stream, '$@', String(linked),
                     metadata === undefined || metadata === null ? null : json(metadata), false,
                     typeof metadata !== 'string');
    };
    global.log = function () {
        var parts = [];
        for (var i = 0; i < arguments.length; i++)
            parts.push(typeof arguments[i] === 'string' ? arguments[i] : JSON.stringify(arguments[i]));
        __stele_log(parts.join(' '));
    };

    function parseOr(raw) {
        if (raw === null || raw === undefined || raw === '') return undefined;
        try { return JSON.parse(raw); } catch (e) { return undefined; }
    }
    /* The event object handlers receive. body/data and metadata are parsed
     * on first use: a handler that only counts never pays for JSON. */
    function Ev(streamId, type, seq, raw, mraw, flags, created, position) {
        this.streamId = streamId;
        this.eventType = type;
        this.sequenceNumber = seq;
        /* The runner passes no data (raw undefined, mraw the event's
         * number): bodyRaw and metadataRaw are fetched from C on first
         * use, so an event whose data is never read costs no string. */
        if (typeof mraw === 'number') this._g = mraw;
        else { this._r = raw; this._mr = mraw; }
        this.isJson = (flags & 1) !== 0;
        this.position = position;
        this.partition = '';
        this._c = created;
    }
    Object.defineProperty(Ev.prototype, 'bodyRaw', {
        get: function () {
            if (this._r === undefined) this._r = __stele_raw(0, this._g);
            return this._r;
        },
        set: function (v) { this._r = v; }
    });
    Object.defineProperty(Ev.prototype, 'metadataRaw', {
        get: function () {
            if (this._mr === undefined) this._mr = __stele_raw(1, this._g);
            return this._mr;
        },
        set: function (v) { this._mr = v; }
    });
    Object.defineProperty(Ev.prototype, 'body', {
        get: function () {
            if (!('_b' in this)) {
                var b;
                if (!this.isJson) b = undefined;
                else if (this._r === undefined && this._g !== undefined) {
                    /* the event being handled: parsed in C, or null when
                     * JSON.parse must decide (js.c, jsjson.c) */
                    b = __stele_body(this._g);
                    if (b === null) b = parseOr(this.bodyRaw);
                } else b = parseOr(this.bodyRaw);
                this._b = b;
            }
            return this._b;
        },
        set: function (v) { this._b = v; }
    });
    Object.defineProperty(Ev.prototype, 'data', {
        get: function () { return this.body; },
        set: function (v) { this._b = v; }
    });
    Object.defineProperty(Ev.prototype, 'metadata', {
        get: function () {
            if (!('_m' in this)) this._m = parseOr(this.metadataRaw);
            return this._m;
        },
        set: function (v) { this._m = v; }
    });
    Object.defineProperty(Ev.prototype, 'created', {
        get: function () { return new Date(Math.floor(this._c / 1000)).toISOString(); }
    });

    function initState() {
        var h = def.handlers.$init;
        var s = h ? h() : {};
        return s === undefined ? {} : s;
    }
    function initShared() {
        var s = def.handlers.$initShared === undefined ? {} : def.handlers.$initShared();
        return s === undefined ? {} : s;
    }
    function loadShared() {
        if (sharedLoaded) return;
        var r = __stele_load('', true);
        if (r === null) { shared = initShared(); sharedPos = -1; }
        else { shared = JSON.parse(r[0]); sharedPos = r[1]; }
        sharedLoaded = true;
    }

    /* The per-event path (on) reads what it needs through one object,
     * `hot`, made by describe() once the query has run: duktape resolves a
     * closure variable by name on every use, while a property of a local
     * is one lookup in a small object. Handlers by type exclude the
     * special names ($init, $initShared, $any, $deleted), so no event type
     * can call them by accident. */
    var hot = null;
    function makeHot() {
        var hs = Object.create(null);
        for (var k in def.handlers)
            if (k !== '$init' && k !== '$initShared' && k !== '$any' && k !== '$deleted')
                hs[k] = def.handlers[k];
        /* fromStream(s) naming views: each event is checked against the
         * names (the subscription's filter may deliver more, run.c) */
        var check = null;
        for (var i = 0; i < def.streams.length; i++) {
            var n = def.streams[i];
            if (n.indexOf('$ce-') !== 0 && n.indexOf('$et-') !== 0) continue;
            if (check === null) check = { s: Object.create(null), ce: Object.create(null), et: Object.create(null) };
        }
        if (check !== null)
            for (var j = 0; j < def.streams.length; j++) {
                var m = def.streams[j];
                if (m.indexOf('$ce-') === 0) check.ce[m.substring(4)] = true;
                else if (m.indexOf('$et-') === 0) check.et[m.substring(4)] = true;
                else check.s[m] = true;
            }
        /* $deleted runs for foreachStream() projections whose source does
         * not name $deletes itself (then its events are ordinary ones) */
        var del = def.handlers.$deleted;
        if (del === undefined || !def.foreachStream || readsDeletes()) del = null;
        hot = {
            /* what on() would otherwise look up by name on every event */
            Ev: Ev, load: __stele_load, init: def.handlers.$init, dropped: DROPPED,
            del: del,
            check: check,
            hs: hs, any: def.handlers.$any, pb: def.partitionBy, fe: def.foreachStream,
            bi: biState(), states: states, statePos: statePos,
            links: def.options.$includeLinks === true, matching: def.matching,
            matched: Object.create(null), nmatched: 0,
            dirty: dirty, dirtyMark: dirtyMark, cur: null, folding: false
        };
    }

    /* fromStreamsMatching: the predicate's answer per stream name, kept
     * for up to 10,000 names (then forgotten and asked again: it must be
     * deterministic). */
    function matches(c, streamId) {
        var m = c.matched[streamId];
        if (m === undefined) {
            if (c.nmatched >= 10000) { c.matched = Object.create(null); c.nmatched = 0; }
            m = c.matched[streamId] = !!c.matching(streamId);
            c.nmatched++;
        }
        return m;
    }

    /* The category rule of queries: the part before the first '-'; a name
     * without one, or starting with it, is its own category. */
    function sourceHas(ck, streamId, type) {
        if (ck.s[streamId] === true || ck.et[type] === true) return true;
        var d = streamId.indexOf('-');
        return ck.ce[d > 0 ? streamId.substring(0, d) : streamId] === true;
    }

    function readsDeletes() {
        for (var i = 0; i < def.streams.length; i++)
            if (def.streams[i] === '$deletes' || def.streams[i] === '$ce-$deletes') return true;
        for (var j = 0; j < def.categories.length; j++)
            if (def.categories[j] === '$deletes') return true;
        return false;
    }

    /* Could the source have handled events of stream `sid`? (Only a
     * partition that exists is told of its stream's delete; this saves a
     * store lookup for streams the source never reads.) */
    function mayRead(c, sid) {
        var sys = sid.charAt(0) === '$';
        if (def.all) return !sys && (c.matching === null || matches(c, sid));
        var d = sid.indexOf('-'), cat = d > 0 ? sid.substring(0, d) : sid;
        for (var i = 0; i < def.categories.length; i++)
            if (def.categories[i] === cat) return true;
        for (var j = 0; j < def.streams.length; j++) {
            var n = def.streams[j];
            if (n === sid || n === '$ce-' + cat || n.indexOf('$et-') === 0) return true;
        }
        return false;
    }

    /* A partition the $deleted handler dropped: not loaded again, its
     * stored record says so (run.c add_drop); an event of a recreated
     * stream starts it again from $init. */
    var DROPPED = { dropped: true };

    /* The `$streamDeleted` event of `$deletes` at `position`: the deleted
     * stream's partition, if it has one, goes through $deleted(state, ev)
     * once; the handler's result is the new state, as for any handler
     * (undefined: the state as it was, changed in place), except null,
     * which drops the partition. */
    function onDeleted(c, seq, raw, mraw, flags, created, position) {
        var ev0 = new Ev('$deletes', '$streamDeleted', seq, raw, mraw, flags, created, position);
        var raw0 = ev0.bodyRaw, info = parseOr(raw0);
        if (info === undefined || info === null || typeof info.streamId !== 'string') return 0;
        var sid = info.streamId;
        if (!mayRead(c, sid)) return 0;
        var st = c.states, sp = c.statePos;
        var s = st[sid];
        if (s === undefined) {
            var r = __stele_load(sid, false);
            if (r === null) return 0; /* no partition: nothing to tell */
            s = r[2] === true ? DROPPED : JSON.parse(r[0]);
            sp[sid] = r[1];
            st[sid] = s;
        }
        if (s === DROPPED || position <= sp[sid]) return 0;
        var ev = new Ev(sid, '$streamDeleted', info.revision === null ? -1 : info.revision,
                        raw0, '', 1, created, position);
        ev.partition = sid;
        c.cur = ev;
        var rr;
        if (c.bi) {
            loadShared();
            var pair = [s, shared];
            rr = c.del(pair, ev);
            if (rr !== undefined) pair = rr;
            rr = pair === null ? null : pair[0];
            if (pair !== null && position > sharedPos) { shared = pair[1]; sharedDirty = true; }
        } else {
            rr = c.del(s, ev);
            if (rr === undefined) rr = s;
        }
        c.cur = null;
        st[sid] = rr === null ? DROPPED : rr;
        var dm = c.dirtyMark;
        if (dm[sid] !== 1) { dm[sid] = 1; c.dirty.push(sid); return 2; }
        return 1;
    }

    /* Called with `this` = hot (js.c keeps it at hand): a closure
     * variable would be looked up by name. */
    function on(streamId, type, seq, raw, mraw, flags, created, position) {
        var c = this;
        if (c.del !== null && streamId === '$deletes')
            return type === '$streamDeleted' ? onDeleted(c, seq, raw, mraw, flags, created, position) : 0;
        var h = c.hs[type];
        if (h === undefined) {
            h = c.any;
            if (h === undefined) return 0;
        }
        if (type === '$>' && !c.links) return 0;
        if (c.matching !== null && !matches(c, streamId)) return 0;
        if (c.check !== null && !sourceHas(c.check, streamId, type)) return 0;
        var ev = new c.Ev(streamId, type, seq, raw, mraw, flags, created, position);
        var key = '';
        if (c.pb !== null) {
            key = c.pb(ev);
            if (key === undefined || key === null) return 0;
            key = String(key);
        } else if (c.fe) {
            key = streamId;
        }
        ev.partition = key;
        var st = c.states, sp = c.statePos;
        var s = st[key];
        if (s === undefined) {
            var r = c.load(key, false);
            if (r === null) {
                var init = c.init; /* initState(), inline */
                s = init === undefined ? {} : init();
                if (s === undefined) s = {};
                sp[key] = -1;
            }
            else if (r[2] === true) { s = c.dropped; sp[key] = r[1]; }
            else { s = JSON.parse(r[0]); sp[key] = r[1]; }
            st[key] = s;
        }
        if (s === c.dropped) s = st[key] = initState(); /* its stream was recreated */
        /* Exactly once: a stored state may already include events after
         * the checkpoint when its commit was not atomic (see run.c); such
         * an event is not applied to it again. */
        var skipPart = position <= sp[key];
        var skipShared = true;
        if (c.bi) {
            loadShared();
            skipShared = position <= sharedPos;
        }
        if (skipPart && skipShared) return 0;
        /* No try/finally: a handler that throws faults the runtime, which
         * the runner then frees. */
        c.cur = ev;
        if (c.bi) {
            /* A partition that already has this event gets a copy:
             * the handler must not change it again in place. */
            var pair = [skipPart ? JSON.parse(JSON.stringify(s)) : s, shared];
            var rr = h(pair, ev);
            if (rr !== undefined) pair = rr;
            if (!skipPart) s = pair[0];
            if (!skipShared) { shared = pair[1]; sharedDirty = true; }
        } else {
            var r2 = h(s, ev);
            if (r2 !== undefined) s = r2;
        }
        c.cur = null;
        if (!skipPart) {
            st[key] = s;
            var dm = c.dirtyMark;
            if (dm[key] !== 1) { dm[key] = 1; c.dirty.push(key); return 2; }
        }
        return 1;
    }

    function result(s) {
        for (var i = 0; i < def.transforms.length; i++) {
            var t = def.transforms[i];
            if (t.kind === 't') s = t.f(s);
            else if (!t.f(s)) return null;
        }
        return s;
    }

    /* Reconstructing one stream's state (state.c): the stream is one
     * partition; the shared state of a bi-state query starts empty. */
    function foldEvent(streamId, type, seq, raw, mraw, flags, created, position) {
        var c = hot;
        var h = c.hs[type];
        if (h === undefined) {
            h = c.any;
            if (h === undefined) return 0;
        }
        if (type === '$>' && !c.links) return 0;
        var ev = new Ev(streamId, type, seq, raw, mraw, flags, created, position);
        ev.partition = streamId;
        /* No try/finally (as in on()): a handler that throws leaves
         * cur/folding set, and its runtime is freed (state.c) or not used
         * again (inline.c); foldStart resets them anyway. */
        c.cur = ev;
        c.folding = true;
        if (c.bi) {
            var pair = [foldState, initShared()];
            var rr = h(pair, ev);
            if (rr !== undefined) pair = rr;
            foldState = pair[0];
        } else {
            var r = h(foldState, ev);
            if (r !== undefined) foldState = r;
        }
        c.cur = null;
        c.folding = false;
        return 1;
    }

    return {
        on: on,
        foldEvent: foldEvent,
        foldStart: function (raw) {
            hot.cur = null;
            hot.folding = false;
            foldState = raw === null ? initState() : JSON.parse(raw);
        },
        foldJson: function () { return JSON.stringify(foldState) || 'null'; },
        stateOf: function (key) { return states[key]; },
        hot: function () { return hot; },
        describe: function () {
            if (!def.defined) fail('the query selects no source: start it with fromAll(), fromCategory(), fromStream() ...');
            var names = [];
            for (var k in def.handlers) names.push(k);
            if (biState() && !def.partitionBy && !def.foreachStream)
                fail('bi-state ($initShared or options({biState: true})) needs partitionBy() or foreachStream()');
            if (def.options.biState === false && def.handlers.$initShared !== undefined)
                fail('options({biState: false}) contradicts the $initShared handler');
            /* as KurrentDB: a delete names a stream, so only a projection
             * with one partition per stream can be told of it */
            if (def.handlers.$deleted !== undefined && !def.foreachStream)
                fail('a $deleted handler needs foreachStream(): a stream delete reaches the deleted stream\'s own partition only; remove $deleted or use foreachStream()');
            makeHot();
            return JSON.stringify({
                all: def.all, categories: def.categories, streams: def.streams, handlers: names,
                partitioned: !!(def.partitionBy || def.foreachStream), foreachStream: def.foreachStream, biState: biState(),
                onDeleted: hot.del !== null,
                streamsMatching: def.matching !== null,
                outputState: def.outputState, resultStream: def.resultStream,
                transforms: def.transforms.length, options: def.options
            });
        },
        takeDirty: function () {
            var d = dirty;
            dirty = hot.dirty = [];
            dirtyMark = hot.dirtyMark = Object.create(null);
            return d;
        },
        sharedDirty: function () { var d = sharedDirty; sharedDirty = false; return d; },
        isDropped: function (key) { return states[key] === DROPPED; },
        stateJson: function (key) {
            var s = states[key];
            return s === undefined ? 'null' : JSON.stringify(s) || 'null';
        },
        sharedJson: function () { return JSON.stringify(shared) || 'null'; },
        resultJson: function (key) {
            if (def.transforms.length === 0) return null;
            var r = result(states[key]);
            return r === null || r === undefined ? null : JSON.stringify(r);
        },
        sharedCommitted: function (position) { sharedPos = position; },
        /* Fold helper for reconstructing one stream's state (state.c). */
        setState: function (key, raw) { states[key] = raw === null ? initState() : JSON.parse(raw); statePos[key] = -1; },
        count: function () { var n = 0; for (var k in states) n++; return n; },
        /* A transient query's answer: the state (or result) of a query
         * without partitions, else every partition's in an object. */
        dumpAll: function () {
            var t = def.transforms.length > 0;
            if (!def.partitionBy && !def.foreachStream) {
                var s0 = states[''] === undefined ? initState() : states[''];
                return JSON.stringify(t ? result(s0) : s0) || 'null';
            }
            var out = {};
            for (var k in states)
                if (states[k] !== DROPPED) out[k] = t ? result(states[k]) : states[k];
            return JSON.stringify(out);
        }
    };
})(this);
