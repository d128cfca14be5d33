// The view streams through @kurrent/kurrentdb-client (views_suite.js).
"use strict";
require("./views_suite")("kurrent");
