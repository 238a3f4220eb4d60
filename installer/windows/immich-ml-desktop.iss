; Inno Setup 6 script: per-user installer for the one-folder build (no administrator rights needed).
; build_installer.py runs: iscc /DAppVersion=... /DSourceDir=<frozen folder> /DOutputDir=... /DOutputBaseName=...
;                               /DIconFile=<resources\immich-ml-desktop.ico> immich-ml-desktop.iss

#ifndef AppVersion
  #error Pass /DAppVersion=X.Y.Z (build_installer.py does)
#endif
#ifndef SourceDir
  #error Pass /DSourceDir=<PyInstaller one-folder output> (build_installer.py does)
#endif
#ifndef OutputDir
  #define OutputDir "."
#endif
#ifndef OutputBaseName
  #define OutputBaseName "immich-ml-desktop-" + AppVersion + "-windows-x64-setup"
#endif
#ifndef IconFile
  #define IconFile "..\..\resources\immich-ml-desktop.ico"
#endif

#define AppName "Immich ML Desktop"
#define AppExe "immich-ml-desktop.exe"

[Setup]
; AppId identifies the app for upgrades and the uninstaller: never change it.
AppId={{C999161A-1859-4665-B3BB-23D61E2AE30F}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=Immich ML Desktop contributors
AppPublisherURL=https://immich.app
; Per-user install: {autopf} becomes %LOCALAPPDATA%\Programs, no UAC prompt.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename={#OutputBaseName}
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
Uninstallable=yes
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
CloseApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"
Name: "{autoprograms}\{#AppName} (command line)"; Filename: "{cmd}"; Parameters: "/k ""{app}\immich-ml-desktop-cli.exe"" --help"; WorkingDir: "{app}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

; The uninstaller removes the program folder only: settings, the photo index and downloaded models live in the
; user's config/cache folders and stay (nothing the user made is lost by uninstalling).
