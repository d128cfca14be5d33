// @eventstore/db-client against stele serve (the suite is in clients_suite.js).
"use strict";
require("./clients_suite")("esdb");
