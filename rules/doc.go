// Package rules decides what is allowed: it owns the rules file format, its
// strict parsing with file:line errors, the service catalog, host
// normalisation, and the evaluation of one request's facts into a decision.
//
// A rules file is compiled into an immutable *Set; a Store swaps sets
// atomically on reload and keeps the old one when the new files do not
// parse, validate or pass their own test cases. Set.Decide is pure: no I/O,
// no logging, no allocation — it runs on every request.
//
// Non-goals: rules does not resolve names, geolocate addresses or read
// request bodies. The proxy gathers those facts (package proxy) and hands
// them over in a Facts value.
package rules
