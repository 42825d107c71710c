/*
 * async.c - clipl_preprocess_batch on a background thread (decode the next batch while the
 * encoder runs this one).
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct clipl_batch_job {
    int n;        /* items */
    char **paths; /* n copied paths */
    int n_px, flags, nthreads;
    pthread_t thread;
    int started;         /* the thread was created */
    int joined;          /* the thread was joined */
    volatile int done;   /* set by the worker as its last step */
    int rc;              /* status of the batch call */
    char *errmsg;        /* its message when rc != 0 */
    clipl_tensor *batch; /* the result until taken by wait */
    int *status;         /* n item statuses */
    char **messages;     /* n item messages (NULL when fine) */
};

static char *dup_str(const char *s)
{
    size_t len = strlen(s);
    char *d = malloc(len + 1);
    if (d)
        memcpy(d, s, len + 1);
    return d;
}

static void *run(void *arg)
{
    clipl_batch_job *j = arg;
    j->rc = clipl_preprocess_batch(j->n, (const char *const *)j->paths, j->n_px, j->flags,
                                   j->nthreads, &j->batch, j->status);
    if (j->rc)
        j->errmsg = dup_str(clipl_errmsg());
    for (int i = 0; i < j->n; i++) {
        const char *m = clipl_preprocess_batch_message(i);
        if (m && m[0])
            j->messages[i] = dup_str(m);
    }
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void job_free(clipl_batch_job *j)
{
    if (j->paths)
        for (int i = 0; i < j->n; i++)
            free(j->paths[i]);
    if (j->messages)
        for (int i = 0; i < j->n; i++)
            free(j->messages[i]);
    free(j->paths);
    free(j->messages);
    free(j->status);
    free(j->errmsg);
    clipl_tensor_release(j->batch);
    free(j);
}

clipl_batch_job *clipl_batch_job_start(int n, const char *const *paths, int n_px, int flags,
                                       int nthreads)
{
    if (n < 0 || (n > 0 && !paths)) {
        clipl__err(CLIPL_EINVAL, "batch_job_start: n = %d with %s paths", n, paths ? "some" : "no");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!paths[i]) {
            clipl__err(CLIPL_EINVAL, "batch_job_start: path %d is NULL", i);
            return NULL;
        }
    clipl_batch_job *j = calloc(1, sizeof *j);
    if (!j)
        goto nomem;
    j->n = n;
    j->n_px = n_px;
    j->flags = flags;
    j->nthreads = nthreads;
    j->paths = calloc((size_t)n + 1, sizeof *j->paths);
    j->messages = calloc((size_t)n + 1, sizeof *j->messages);
    j->status = calloc((size_t)n + 1, sizeof *j->status);
    if (!j->paths || !j->messages || !j->status)
        goto nomem;
    for (int i = 0; i < n; i++)
        if (!(j->paths[i] = dup_str(paths[i])))
            goto nomem;
    if (pthread_create(&j->thread, NULL, run, j) != 0) {
        clipl__err(CLIPL_ENOMEM, "batch_job_start: could not start a thread for %d images", n);
        job_free(j);
        return NULL;
    }
    j->started = 1;
    return j;
nomem:
    clipl__err(CLIPL_ENOMEM, "batch_job_start: out of memory for %d paths", n);
    if (j)
        job_free(j);
    return NULL;
}

int clipl_batch_job_done(const clipl_batch_job *j)
{
    return j ? __atomic_load_n(&j->done, __ATOMIC_ACQUIRE) : 1;
}

static void join(clipl_batch_job *j)
{
    if (j->started && !j->joined) {
        pthread_join(j->thread, NULL);
        j->joined = 1;
    }
}

int clipl_batch_job_wait(clipl_batch_job *j, clipl_tensor **dst, int *status_out)
{
    if (!j || !dst)
        return clipl__err(CLIPL_EINVAL, "batch_job_wait: %s is NULL", j ? "dst" : "the job");
    join(j);
    if (status_out)
        memcpy(status_out, j->status, sizeof(int) * (size_t)j->n);
    if (j->rc)
        return clipl__err(j->rc, "%s", j->errmsg ? j->errmsg : "preprocess_batch failed");
    if (!j->batch)
        return clipl__err(CLIPL_EINVAL, "batch_job_wait: the batch was already taken");
    *dst = j->batch;
    j->batch = NULL;
    return CLIPL_OK;
}

int clipl_batch_job_count(const clipl_batch_job *j) { return j ? j->n : 0; }

const char *clipl_batch_job_message(const clipl_batch_job *j, int index)
{
    if (!j || index < 0 || index >= j->n || !clipl_batch_job_done(j) || !j->messages[index])
        return "";
    return j->messages[index];
}

void clipl_batch_job_free(clipl_batch_job *j)
{
    if (!j)
        return;
    join(j);
    job_free(j);
}
