/* The JSON-lines event log beside an output (<out>.events.jsonl): one JSON object per line for
 * every phase change, committed layer, damaged file found, resume, error and result, so that
 * tools can follow a run without parsing the human-readable progress lines.  Every line has
 * "time" (UTC, ISO 8601 with milliseconds), "elapsed" (seconds since the log was opened by this
 * process), "pid" and "event"; the other members depend on the event (docs/pipeline.md).
 * The log is appended to, so the history of a resumed run stays in one file.  Only the rank
 * that opens it writes; the functions do nothing when no log is open. */
#ifndef TQP_EVENTS_H
#define TQP_EVENTS_H

#include <cjson/cJSON.h>

#include "tqp/error.h"

/* Open (append) the log; an unwritable log is an error naming the file. */
tqp_status tqp_events_open(const char *path);
void tqp_events_close(void);

/* A new event object with the common members, or NULL when no log is open (cJSON's Add
 * functions accept NULL, so callers add members without checking). */
cJSON *tqp_event_begin(const char *event);
/* Write the event as one line, flush, and free it. */
void tqp_event_end(cJSON *e);

#endif
