/* clipl: the launcher. Embeds LuaJIT with the clipl modules on package.path and runs a script
 * (`clipl run FILE`), a chunk (`clipl -e CODE`), a subcommand script from the scripts folder
 * (`clipl NAME args...`) or the interactive REPL (lua/clipl/repl.lua) with libedit line editing,
 * history and completion. Ctrl-C while Lua runs sets a hook that raises "interrupted!" (as LuaJIT's
 * own luajit.c does) and asks long C loops to stop through clipl_interrupt(). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "clipl.h"

#define PROGNAME "clipl"

static lua_State *global_L;              /* the state a SIGINT hook is set on */
static volatile sig_atomic_t prompt_int; /* Ctrl-C pressed while reading a line */
static int completer_ref = LUA_NOREF;    /* registry ref of the Lua completion function */

/* ---- errors and interrupts ------------------------------------------------------------------- */

static void lstop(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

static volatile sig_atomic_t run_ints; /* Ctrl-C presses during the current call */

static pthread_t main_thread;

/* A process-directed SIGINT may land on a oneDNN (OpenMP) or libvips worker thread: the handlers
 * pass it on to the thread that runs Lua. */
static int forwarded(int sig)
{
    if (!pthread_equal(pthread_self(), main_thread)) {
        pthread_kill(main_thread, sig);
        return 1;
    }
    return 0;
}

/* SIGINT while Lua runs: sets a hook that raises "interrupted!" and asks C loops to stop. Code
 * compiled by the JIT never runs hooks, so a second Ctrl-C explains that and a third one gets the
 * default action (the process ends). */
static void laction(int sig)
{
    if (forwarded(sig)) {
        return;
    }
    run_ints++;
    if (run_ints == 2) {
        static const char msg[] = "\nclipl: still running (JIT-compiled Lua code cannot be "
                                  "interrupted); Ctrl-C again quits\n";
        ssize_t rc = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)rc;
        signal(sig, SIG_DFL);
        return;
    }
    clipl_interrupt(1);
    lua_sethook(global_L, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* SIGINT while waiting at the prompt: abandon the line, stay in the REPL. */
static void paction(int sig)
{
    if (forwarded(sig)) {
        return;
    }
    prompt_int = 1;
}

static void set_sigint(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocking read returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

/* Message handler of every protected call: the message (or the __tostring of an error object)
 * followed by a traceback. */
static int traceback(lua_State *L)
{
    if (!lua_isstring(L, 1)) {
        if (lua_isnoneornil(L, 1) || !luaL_callmeta(L, 1, "__tostring") || !lua_isstring(L, -1)) {
            lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
        lua_replace(L, 1);
        lua_settop(L, 1);
    }
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* Calls the function below narg arguments with a traceback handler; with `arm`, Ctrl-C interrupts
 * it (the previous SIGINT action is restored afterwards). */
static int docall(lua_State *L, int narg, int nres, int arm)
{
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    global_L = L;
    struct sigaction old;
    if (arm) {
        clipl_interrupt(0);
        run_ints = 0;
        sigaction(SIGINT, NULL, &old);
        set_sigint(laction);
    }
    int status = lua_pcall(L, narg, nres, base);
    if (arm) {
        sigaction(SIGINT, &old, NULL);
        lua_sethook(L, NULL, 0, 0);
        clipl_interrupt(0);
    }
    lua_remove(L, base);
    return status;
}

/* Prints the error message on top of the stack as `clipl: <message>` and pops it. */
static void report(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) {
        msg = "(error object is not a string)";
    }
    /* messages that already name clipl (cannot load libclipl, ...) are not prefixed twice */
    if (strncmp(msg, PROGNAME ": ", strlen(PROGNAME) + 2) == 0) {
        msg += strlen(PROGNAME) + 2;
    }
    fprintf(stderr, "%s: %s\n", PROGNAME, msg);
    fflush(stderr);
    lua_pop(L, 1);
}

/* ---- the native table the REPL uses (require "clipl.app") ------------------------------------ */

static char **candidates;
static size_t ncandidates;

static void free_candidates(void)
{
    for (size_t i = 0; i < ncandidates; i++) {
        free(candidates[i]);
    }
    free(candidates);
    candidates = NULL;
    ncandidates = 0;
}

/* Asks the Lua completer for the candidates of a word; on any error there are none. */
static void fetch_candidates(const char *text)
{
    free_candidates();
    lua_State *L = global_L;
    if (L == NULL || completer_ref == LUA_NOREF) {
        return;
    }
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, completer_ref);
    lua_pushstring(L, text);
    lua_pushstring(L, rl_line_buffer ? rl_line_buffer : "");
    if (lua_pcall(L, 2, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return;
    }
    size_t n = lua_objlen(L, -1);
    candidates = calloc(n ? n : 1, sizeof *candidates);
    if (candidates == NULL) {
        lua_settop(L, top);
        return;
    }
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        const char *s = lua_tostring(L, -1);
        if (s != NULL) {
            char *copy = strdup(s);
            if (copy != NULL) {
                candidates[ncandidates++] = copy;
            }
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top);
}

static char *generator(const char *text, int state)
{
    static size_t next;
    if (state == 0) {
        fetch_candidates(text);
        next = 0;
    }
    if (next < ncandidates) {
        return strdup(candidates[next++]);
    }
    return NULL;
}

static char **attempt_completion(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    return rl_completion_matches(text, generator);
}

/* readline(prompt) -> line | nil, "eof" | nil, "interrupt". Without a terminal on stdin it reads
 * a plain line and shows no prompt. */
static int app_readline(lua_State *L)
{
    const char *prompt = luaL_optstring(L, 1, "");
    global_L = L;
    if (!isatty(STDIN_FILENO)) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        int c, any = 0;
        while ((c = getchar()) != EOF && c != '\n') {
            luaL_addchar(&b, (char)c);
            any = 1;
        }
        if (c == EOF && !any) {
            lua_pushnil(L);
            lua_pushstring(L, "eof");
            return 2;
        }
        luaL_pushresult(&b);
        return 1;
    }
    prompt_int = 0;
    set_sigint(paction);
    char *line = readline(prompt);
    set_sigint(SIG_DFL);
    if (prompt_int) {
        free(line);
        prompt_int = 0;
        lua_pushnil(L);
        lua_pushstring(L, "interrupt");
        return 2;
    }
    if (line == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, "eof");
        return 2;
    }
    lua_pushstring(L, line);
    free(line);
    return 1;
}

static int app_history_add(lua_State *L)
{
    add_history(luaL_checkstring(L, 1));
    return 0;
}

static int app_history_load(lua_State *L)
{
    stifle_history((int)luaL_optinteger(L, 2, 1000));
    lua_pushboolean(L, read_history(luaL_checkstring(L, 1)) == 0);
    return 1;
}

static int app_history_save(lua_State *L)
{
    lua_pushboolean(L, write_history(luaL_checkstring(L, 1)) == 0);
    return 1;
}

/* set_completer(fn): fn(word, line) returns the full candidates for word. */
static int app_set_completer(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (completer_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, completer_ref);
    }
    lua_pushvalue(L, 1);
    completer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* call(fn, ...) -> true, results... | false, message with traceback. Ctrl-C interrupts fn. */
static int app_call(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int narg = lua_gettop(L) - 1;
    if (docall(L, narg, LUA_MULTRET, 1) != 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    return lua_gettop(L);
}

static int app_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 0)));
    return 1;
}

/* listdir(path) -> sorted array of entry names | nil, message. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int app_listdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (d == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    /* sort in Lua terms: collect, sort with qsort, write back */
    const char **names = malloc((size_t)(n ? n : 1) * sizeof *names);
    if (names == NULL) {
        return 1;
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        names[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1); /* the strings stay alive in the table until it is rewritten */
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    lua_newtable(L);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    free(names);
    lua_remove(L, -2);
    return 1;
}

static const luaL_Reg app_funcs[] = {
    {"readline", app_readline},
    {"history_add", app_history_add},
    {"history_load", app_history_load},
    {"history_save", app_history_save},
    {"set_completer", app_set_completer},
    {"call", app_call},
    {"isatty", app_isatty},
    {"listdir", app_listdir},
    {NULL, NULL},
};

static int open_app(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, app_funcs);
    lua_pushstring(L, CLIPL_VERSION_STRING);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, LUAJIT_VERSION);
    lua_setfield(L, -2, "luajit");
    return 1;
}

/* ---- finding the Lua modules ----------------------------------------------------------------- */

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Directory of the running executable (no trailing slash), or "" when unknown. */
static void exe_dir(char *buf, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0) {
        buf[0] = '\0';
        return;
    }
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
}

static int same_dir(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) != NULL && realpath(b, rb) != NULL && strcmp(ra, rb) == 0;
}

/* Prepends dir/?.lua;dir/?/init.lua to package.path. */
static void prepend_path(lua_State *L, const char *dir)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, old ? old : "");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* Build tree when the executable sits beside the generated lua/ folder of this build, else the
 * installed tree (the configured prefix, or ../share/lua/5.1 from the executable). When none has
 * the modules, package.path (LUA_PATH) is left to find them. */
static void setup_paths(lua_State *L)
{
    char dir[PATH_MAX], probe[PATH_MAX + 64];
    exe_dir(dir, sizeof dir);
    snprintf(probe, sizeof probe, "%s/lua", dir);
    if (dir[0] && same_dir(probe, CLIPL_BUILD_LUA_DIR)) {
        prepend_path(L, CLIPL_SOURCE_LUA_DIR);
        prepend_path(L, CLIPL_BUILD_LUA_DIR);
        return;
    }
    snprintf(probe, sizeof probe, "%s/clipl/init.lua", CLIPL_INSTALL_LUA_DIR);
    if (file_exists(probe)) {
        prepend_path(L, CLIPL_INSTALL_LUA_DIR);
        return;
    }
    snprintf(probe, sizeof probe, "%s/../share/lua/5.1/clipl/init.lua", dir);
    if (dir[0] && file_exists(probe)) {
        snprintf(probe, sizeof probe, "%s/../share/lua/5.1", dir);
        prepend_path(L, probe);
    }
}

/* ---- commands -------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: clipl                     open the REPL (Lua with `clip` loaded)\n"
        "       clipl run FILE [ARGS...]  run a Lua script (`arg` as in luajit; FILE - is stdin)\n"
        "       clipl FILE.lua [ARGS...]  the same\n"
        "       clipl -e CODE [ARGS...]   run a chunk of Lua (ARGS in `arg`)\n"
        "       clipl -i FILE [ARGS...]   run a script, then open the REPL\n"
        "       clipl NAME [ARGS...]      run the subcommand NAME (NAME --help for its usage)\n"
        "       clipl help [NAME]         this help and the subcommands, or NAME's help\n"
        "       clipl --version           versions of clipl, libclipl and LuaJIT\n"
        "In the REPL: Tab completes, `?name` shows help, a trailing `;` hides the result,\n"
        "Ctrl-C interrupts, Ctrl-D quits. See docs/cli.md.\n");
}

/* Sets the global `arg`: arg[0] = script, arg[1..] = args, negative indices the launcher's own
 * words; pushes the args on the stack as well and returns their count. */
static int set_args(lua_State *L, char **argv, int script_index, int argc, int push)
{
    lua_createtable(L, argc - script_index, script_index + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script_index);
    }
    lua_setglobal(L, "arg");
    if (!push) {
        return 0;
    }
    int n = argc - script_index - 1;
    luaL_checkstack(L, n + 3, "too many arguments to the script");
    for (int i = script_index + 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
    }
    return n;
}

/* Loads clipl as the global `clip`. Returns 0 or reports and returns 1. */
static int load_clip(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushstring(L, "clipl");
    if (docall(L, 1, 1, 1) != 0) {
        report(L);
        return 1;
    }
    lua_setglobal(L, "clip");
    return 0;
}

/* Runs the chunk that luaL_load* just pushed (status is its result) with the script arguments. */
static int run_loaded(lua_State *L, int status, char **argv, int script_index, int argc)
{
    if (status != 0) {
        report(L);
        return 1;
    }
    int n = set_args(L, argv, script_index, argc, 1);
    if (docall(L, n, 0, 1) != 0) {
        report(L);
        return 1;
    }
    return 0;
}

static int run_file(lua_State *L, const char *path, char **argv, int script_index, int argc)
{
    if (load_clip(L)) {
        return 1;
    }
    int status = luaL_loadfile(L, strcmp(path, "-") == 0 ? NULL : path);
    return run_loaded(L, status, argv, script_index, argc);
}

static int run_string(lua_State *L, const char *code, char **argv, int script_index, int argc)
{
    if (load_clip(L)) {
        return 1;
    }
    int status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
    return run_loaded(L, status, argv, script_index, argc);
}

static int run_repl(lua_State *L)
{
    if (load_clip(L)) {
        return 1;
    }
    const char *code = "return require('clipl.repl').run(require('clipl.app'))";
    if (luaL_loadstring(L, code) != 0 || docall(L, 0, 1, 0) != 0) {
        report(L);
        return 1;
    }
    int rc = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    lua_pop(L, 1);
    return rc;
}

/* The scripts folders: $CLIPL_SCRIPTS (colon-separated) first, then config.scripts. Pushes a
 * table of folders. */
static void push_script_dirs(lua_State *L)
{
    lua_newtable(L);
    int n = 0;
    const char *env = getenv("CLIPL_SCRIPTS");
    if (env != NULL && env[0]) {
        const char *p = env;
        while (*p) {
            const char *colon = strchr(p, ':');
            size_t len = colon ? (size_t)(colon - p) : strlen(p);
            if (len > 0) {
                lua_pushlstring(L, p, len);
                lua_rawseti(L, -2, ++n);
            }
            p += len + (colon ? 1 : 0);
        }
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "clipl.config");
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
        lua_getfield(L, -1, "scripts");
        if (lua_isstring(L, -1)) {
            lua_rawseti(L, -3, ++n);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* Finds NAME.lua in the scripts folders; writes the path and returns 1 when found. */
static int find_script(lua_State *L, const char *name, char *out, size_t size)
{
    push_script_dirs(L);
    int found = 0;
    size_t n = lua_objlen(L, -1);
    for (size_t i = 1; i <= n && !found; i++) {
        lua_rawgeti(L, -1, (int)i);
        snprintf(out, size, "%s/%s.lua", lua_tostring(L, -1), name);
        lua_pop(L, 1);
        found = file_exists(out);
    }
    lua_pop(L, 1);
    return found;
}

/* First comment line of a script ("-- text", after an optional #! line) into buf; 0 when none. */
static int script_description(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[512];
    int ok = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#' && line[1] == '!') {
            continue;
        }
        if (line[0] == '-' && line[1] == '-') {
            const char *s = line + 2;
            while (*s == '-' || *s == ' ' || *s == '\t') {
                s++;
            }
            size_t len = strcspn(s, "\r\n");
            if (len >= size) {
                len = size - 1;
            }
            memcpy(buf, s, len);
            buf[len] = '\0';
            ok = len > 0;
        }
        break;
    }
    fclose(f);
    return ok;
}

static int list_commands(lua_State *L)
{
    usage(stdout);
    printf("\nsubcommands:\n");
    push_script_dirs(L);
    size_t ndirs = lua_objlen(L, -1);
    int any = 0;
    lua_newtable(L); /* names already listed */
    for (size_t i = 1; i <= ndirs; i++) {
        lua_rawgeti(L, -2, (int)i);
        const char *dir = lua_tostring(L, -1);
        lua_pushcfunction(L, app_listdir);
        lua_pushvalue(L, -2);
        lua_call(L, 1, 1);
        if (lua_istable(L, -1)) {
            size_t n = lua_objlen(L, -1);
            for (size_t j = 1; j <= n; j++) {
                lua_rawgeti(L, -1, (int)j);
                const char *file = lua_tostring(L, -1);
                size_t len = strlen(file);
                char path[PATH_MAX], desc[256];
                if (len > 4 && strcmp(file + len - 4, ".lua") == 0) {
                    lua_pushlstring(L, file, len - 4);
                    lua_rawget(L, -5);
                    int seen = lua_toboolean(L, -1);
                    lua_pop(L, 1);
                    snprintf(path, sizeof path, "%s/%s", dir, file);
                    if (!seen && script_description(path, desc, sizeof desc)) {
                        printf("  %-12.*s %s\n", (int)(len - 4), file, desc);
                        lua_pushlstring(L, file, len - 4);
                        lua_pushboolean(L, 1);
                        lua_rawset(L, -6);
                        any = 1;
                    }
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
    if (!any) {
        printf("  (none found in the scripts folder)\n");
    }
    return 0;
}

static int dispatch(lua_State *L, int argc, char **argv)
{
    if (argc < 2) {
        return run_repl(L);
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0 || strcmp(cmd, "version") == 0) {
        printf("clipl %s (libclipl %s, %s)\n", CLIPL_VERSION_STRING, clipl_version(),
               LUAJIT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        if (argc >= 3 && strcmp(cmd, "help") == 0) {
            char path[PATH_MAX];
            if (!find_script(L, argv[2], path, sizeof path)) {
                fprintf(stderr, "%s: no subcommand '%s' (clipl help lists them)\n", PROGNAME,
                        argv[2]);
                return 2;
            }
            char *sub[] = {argv[0], path, (char *)"--help"};
            return run_file(L, path, sub, 1, 3);
        }
        return list_commands(L);
    }
    if (strcmp(cmd, "run") == 0 || strcmp(cmd, "-i") == 0) {
        int interactive = cmd[1] == 'i';
        if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
            printf("usage: clipl %s FILE [ARGS...]\n  %s\n", cmd,
                   interactive ? "runs the Lua script FILE, then opens the REPL (also after an "
                                 "error in FILE)"
                               : "runs the Lua script FILE; it gets `arg` (arg[0] = FILE, "
                                 "arg[1..] = ARGS) and ARGS as `...`");
            return 0;
        }
        if (argc < 3) {
            if (interactive) {
                return run_repl(L);
            }
            fprintf(stderr, "%s: run: missing the script file (usage: clipl run FILE [ARGS...])\n",
                    PROGNAME);
            return 2;
        }
        int rc = run_file(L, argv[2], argv, 2, argc);
        if (interactive) {
            /* as python -i: the REPL opens even after an error, to look at what the script left */
            return run_repl(L);
        }
        return rc;
    }
    if (strcmp(cmd, "-e") == 0) {
        if (argc < 3) {
            fprintf(stderr, "%s: -e: missing the code to run (usage: clipl -e CODE [ARGS...])\n",
                    PROGNAME);
            return 2;
        }
        if (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
            printf("usage: clipl -e CODE [ARGS...]\n  runs CODE with `clip` loaded; ARGS are in "
                   "`arg` (arg[1..]) and in `...`\n");
            return 0;
        }
        return run_string(L, argv[2], argv, 2, argc);
    }
    if (cmd[0] == '-') {
        fprintf(stderr, "%s: unknown option '%s'\n", PROGNAME, cmd);
        usage(stderr);
        return 2;
    }
    size_t len = strlen(cmd);
    if (strchr(cmd, '/') != NULL || (len > 4 && strcmp(cmd + len - 4, ".lua") == 0)) {
        return run_file(L, cmd, argv, 1, argc);
    }
    char path[PATH_MAX];
    if (!find_script(L, cmd, path, sizeof path)) {
        fprintf(stderr, "%s: unknown command '%s' (clipl help lists the commands)\n", PROGNAME,
                cmd);
        return 2;
    }
    argv[1] = path; /* the script sees arg[0] = its path, as under luajit */
    return run_file(L, path, argv, 1, argc);
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create the Lua state (out of memory)\n", PROGNAME);
        return 1;
    }
    global_L = NULL;
    main_thread = pthread_self();
    lua_gc(L, LUA_GCSTOP, 0);
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART, -1);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, open_app);
    lua_setfield(L, -2, "clipl.app");
    lua_pop(L, 2);
    setup_paths(L);

    rl_readline_name = "clipl";
    rl_attempted_completion_function = attempt_completion;
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{(,+-*/%^~#[]}?";
    rl_completer_word_break_characters = (char *)rl_basic_word_break_characters;
    rl_completion_append_character = '\0';

    int rc = dispatch(L, argc, argv);
    fflush(stdout);
    free_candidates();
    lua_close(L);
    return rc;
}
