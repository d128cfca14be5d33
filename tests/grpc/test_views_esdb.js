// The view streams through @eventstore/db-client (views_suite.js).
"use strict";
require("./views_suite")("esdb");
