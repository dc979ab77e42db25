# apt.sh - a private apt state for Debian 12's suites, sourced by
# tools/kernels/run.sh and tests/conformance/conformance.sh.
#
#   debian_apt_init DIR     package lists of bookworm, -updates, -security
#                           and -backports kept in DIR (the host's
#                           /etc/apt and /var/lib/apt stay as they were);
#                           sets the array aptopts, which points apt-get
#                           and apt-cache at them
#   debian_apt_update LOG   fetch the lists (an earlier run's are kept if
#                           that fails; with none, it returns 1, LOG says
#                           why)
#   debian_apt_newest PKG [PREFIX]
#                           the newest version of PKG in the lists (of
#                           those that start with PREFIX), or nothing
#   debian_apt_download DIR PKG VER
#                           that .deb into DIR (never installed), its path
#                           printed; 1 if apt-get fails
#
# DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR change the mirrors.

debian_apt_init() {
	local dir=$1 mirror secmirror key=/usr/share/keyrings/debian-archive-keyring.gpg
	mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
	secmirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" \
		"$dir/sources.list.d" "$dir/preferences.d"
	cat > "$dir/sources.list" <<EOF
deb [signed-by=$key] $mirror bookworm main
deb [signed-by=$key] $mirror bookworm-updates main
deb [signed-by=$key] $secmirror bookworm-security main
deb [signed-by=$key] $mirror bookworm-backports main
EOF
	aptopts=(
		-o "Dir::Etc::SourceList=$dir/sources.list"
		-o "Dir::Etc::SourceParts=$dir/sources.list.d"
		-o "Dir::Etc::Preferences=$dir/preferences"
		-o "Dir::Etc::PreferencesParts=$dir/preferences.d"
		-o "Dir::State::Lists=$dir/lists"
		-o "Dir::Cache=$dir/cache"
		-o "APT::Sandbox::User=root"
		-o "APT::Architecture=amd64"
	)
	debian_apt_dir=$dir
}

debian_apt_update() {
	local log=$1
	# A mirror that can't be reached is only a warning to apt-get
	# update, unless asked.
	if apt-get "${aptopts[@]}" -qq --error-on=any update > "$log" 2>&1; then
		return 0
	fi
	ls "$debian_apt_dir/lists/"*_Packages* > /dev/null 2>&1
}

debian_apt_newest() {
	local pkg=$1 prefix=${2:-}
	apt-cache "${aptopts[@]}" show "$pkg" 2> /dev/null |
		sed -n 's/^Version: //p' | awk -v p="$prefix" 'index($0, p) == 1' |
		sort -V | tail -1 || true
}

debian_apt_download() {
	local dir=$1 pkg=$2 ver=$3 deb
	mkdir -p "$dir"
	(cd "$dir" && apt-get "${aptopts[@]}" -qq download "$pkg=$ver") >&2 || return 1
	# The file name has the version's epoch colon escaped: found by glob.
	deb=$(ls -t "$dir/${pkg}_"*.deb 2> /dev/null | head -1)
	[ -n "$deb" ] || return 1
	echo "$deb"
}
