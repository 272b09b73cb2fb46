// Package messages holds the values that cross Affinity's boundaries: what a
// worker receives (Call), what it can hand back to pin later calls (Ref), the
// affinity modes callers choose from, the control messages the runtime sends
// to worker actors, and the typed events the runtime publishes.
//
// The package has no behaviour beyond parsing and printing; it exists so that
// workers, event consumers and the runtime can share these types without
// importing the runtime itself.
package messages
