/* Not signed in and no dashboard fragment to follow: go to the sign-in page. */
if (!window.podiumRouted) window.location.replace("/__login__?next=/connect/");
