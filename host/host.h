/* host.h: what the host's units share. */
#ifndef BH_HOST_H
#define BH_HOST_H

#include <lua.h>

/* sig.c */
void host_sig_install(lua_State *L);
void host_sig_remove(void);
void host_sig_clear(lua_State *L);
int host_sig_status(void);

/* main.c */
int host_docall(lua_State *L, int narg, int nres);
void host_report(lua_State *L, int status);

/* repl.c: returns the exit status (0 after Ctrl-D) */
int host_repl(lua_State *L);

/* features.c */
int host_privileged(const char **msg);
int host_features(void);

#endif
