CREATE TABLE "homes" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"owner_id" uuid NOT NULL,
	"name" text NOT NULL,
	"scope" text NOT NULL,
	"desktop_name" text DEFAULT '' NOT NULL,
	"runtime" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_used_at" timestamp with time zone,
	CONSTRAINT "homes_scope_check" CHECK ("homes"."scope" in ('user', 'desktop'))
);
--> statement-breakpoint
ALTER TABLE "desktops" ADD COLUMN "home_id" uuid;--> statement-breakpoint
ALTER TABLE "homes" ADD CONSTRAINT "homes_owner_id_users_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."users"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "homes_identity_key" ON "homes" USING btree ("owner_id","runtime","name","desktop_name");--> statement-breakpoint
ALTER TABLE "desktops" ADD CONSTRAINT "desktops_home_id_homes_id_fk" FOREIGN KEY ("home_id") REFERENCES "public"."homes"("id") ON DELETE restrict ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "desktops_home_id_idx" ON "desktops" USING btree ("home_id");