# HOME is the sandbox root, so this runs for interactive bash sessions inside the sandbox.
export PS1='\w\$ '
alias ll='ls -la'
