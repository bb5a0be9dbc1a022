/* JSON-lines event log (include/tqp/events.h). */
#include "tqp/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tqp/progress.h"

static FILE *log_file;
static double log_start;

tqp_status tqp_events_open(const char *path)
{
    tqp_events_close();
    log_file = fopen(path, "a");
    if (!log_file) return tqp_error_set(TQP_EIO, "%s: cannot open the event log for appending", path);
    log_start = tqp_now();
    return TQP_OK;
}

void tqp_events_close(void)
{
    if (log_file) fclose(log_file);
    log_file = NULL;
}

cJSON *tqp_event_begin(const char *event)
{
    if (!log_file) return NULL;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "time", when);
    cJSON_AddNumberToObject(e, "elapsed", (double)(long long)((tqp_now() - log_start) * 1000) / 1000);
    cJSON_AddNumberToObject(e, "pid", (double)getpid());
    cJSON_AddStringToObject(e, "event", event);
    return e;
}

void tqp_event_end(cJSON *e)
{
    if (!e) return;
    char *line = log_file ? cJSON_PrintUnformatted(e) : NULL;
    if (line) {
        fprintf(log_file, "%s\n", line);
        fflush(log_file);
    }
    free(line);
    cJSON_Delete(e);
}
